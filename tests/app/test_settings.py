"""Settings renamed to CRM-neutral names: the old environment variables keep working, and say so in the log."""

from __future__ import annotations

import logging

import pytest

from app.settings import RENAMED, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for old, new in RENAMED.items():
        monkeypatch.delenv(f"CRMWATCH_{old.upper()}", raising=False)
        monkeypatch.delenv(f"CRMWATCH_{new.upper()}", raising=False)


def test_an_old_environment_variable_still_works_and_logs_a_deprecation(monkeypatch, caplog):
    monkeypatch.setenv("CRMWATCH_AMOCRM_MAX_RETRIES", "3")
    monkeypatch.setenv("CRMWATCH_AMOCRM_TIMEOUT_SECONDS", "7.5")
    with caplog.at_level(logging.WARNING, logger="crmwatch.settings"):
        settings = Settings(_env_file=None)
    assert settings.crm_max_retries == 3 and settings.crm_timeout_seconds == 7.5
    assert settings.amocrm_max_retries == 3  # the old attribute reads the new setting
    lines = [r.getMessage() for r in caplog.records if r.name == "crmwatch.settings"]
    assert lines == [
        "settings.deprecated: CRMWATCH_AMOCRM_MAX_RETRIES is deprecated, set CRMWATCH_CRM_MAX_RETRIES instead",
        "settings.deprecated: CRMWATCH_AMOCRM_TIMEOUT_SECONDS is deprecated, set CRMWATCH_CRM_TIMEOUT_SECONDS instead",
    ]


def test_the_new_name_wins_over_the_old_one(monkeypatch):
    monkeypatch.setenv("CRMWATCH_AMOCRM_BACKOFF_CAP_SECONDS", "30")
    monkeypatch.setenv("CRMWATCH_CRM_BACKOFF_CAP_SECONDS", "90")
    assert Settings(_env_file=None).crm_backoff_cap_seconds == 90


def test_the_new_names_log_nothing(monkeypatch, caplog):
    monkeypatch.setenv("CRMWATCH_CRM_BACKOFF_BASE_SECONDS", "0.25")
    with caplog.at_level(logging.WARNING, logger="crmwatch.settings"):
        settings = Settings(_env_file=None)
    assert settings.crm_backoff_base_seconds == 0.25 and settings.crm_max_retries == 6
    assert not [r for r in caplog.records if r.name == "crmwatch.settings"]


def test_an_old_keyword_argument_still_works():
    assert Settings(_env_file=None, amocrm_backoff_base_seconds=0.01).crm_backoff_base_seconds == 0.01


def test_a_bad_old_value_is_refused_like_a_bad_new_one(monkeypatch):
    monkeypatch.setenv("CRMWATCH_AMOCRM_MAX_RETRIES", "many")
    with pytest.raises(ValueError, match="crm_max_retries"):
        Settings(_env_file=None)
