"""Every rule test runs on an amoCRM account and on a Bitrix24 portal: the rules read only the
CRM-neutral mirror, and this proves it."""

from __future__ import annotations

import pytest

from tests.app.rules import mirror_builder


@pytest.fixture(autouse=True, params=sorted(mirror_builder.PROFILES))
def crm_profile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> mirror_builder.CrmProfile:
    profile = mirror_builder.PROFILES[request.param]
    monkeypatch.setattr(mirror_builder, "PROFILE", profile)
    return profile
