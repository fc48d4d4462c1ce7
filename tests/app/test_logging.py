"""Logs are JSON with a request id, and never carry a secret."""

from __future__ import annotations

import json
import logging

import pytest

from app import logging as app_logging
from tests.conftest import FORM, create_account, form_body


@pytest.fixture
def json_logs(capsys):
    yield capsys
    logging.getLogger().handlers.clear()


def start_json_logs(level: str = "INFO") -> None:
    # Configured inside the test: pytest resets the root logger's handlers between phases.
    app_logging.configure(level, json_output=True)


async def test_access_log_masks_the_webhook_key_and_carries_a_request_id(client, json_logs):
    start_json_logs("DEBUG")  # accepted webhooks are logged at DEBUG (see the next test)
    acc = await create_account(client, access_token="tok-should-not-appear")
    resp = await client.post(
        f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers={**FORM, "X-Request-ID": "req-123"}
    )
    assert resp.headers["x-request-id"] == "req-123"
    err = json_logs.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    hook = [ln for ln in lines if ln.get("event") == "http.request" and ln["path"].startswith("/hooks/")]
    assert hook and hook[0]["path"] == "/hooks/amocrm/***" and hook[0]["request_id"] == "req-123"
    assert hook[0]["status"] == 200
    assert acc["key"] not in err and "tok-should-not-appear" not in err


def test_secret_fields_are_redacted(json_logs):
    start_json_logs()
    logging.getLogger("t").warning(
        "x",
        extra={
            "access_token": "abc",
            "client_secret": "def",
            "count": 3,
            "url": "https://h/hooks/telephony/mango/KEY123/events/call",
        },
    )
    line = json.loads(json_logs.readouterr().err.strip().splitlines()[-1])
    assert line["access_token"] == "***" and line["client_secret"] == "***" and line["count"] == 3
    assert line["url"] == "https://h/hooks/telephony/mango/***/events/call"


async def test_accepted_webhooks_stay_out_of_the_info_log_but_refusals_do_not(client, json_logs):
    acc = await create_account(client)
    start_json_logs("INFO")
    await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers=FORM)
    await client.post(f"/hooks/amocrm/{acc['key']}", content=b"%%%", headers=FORM)
    lines = [json.loads(line) for line in json_logs.readouterr().err.splitlines() if line.startswith("{")]
    hooks = [ln for ln in lines if ln.get("event") == "http.request" and ln["path"].startswith("/hooks/")]
    assert [ln["status"] for ln in hooks] == [400]
