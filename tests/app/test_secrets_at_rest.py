"""No stored delivery holds a secret (issue 17, defect 2): every source's real fixtures go through
the real routes, then no inbox payload contains any configured or delivered secret, in plain or
URL-encoded form, and the worker still applies every row (the scrubbed rows parse the same)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy import select

from app.accounts.models import Account
from app.calls.models import Call
from app.ingest import worker
from app.ingest.models import InboxEvent
from integrations.amocrm.demo_data import DEMO_TOKEN
from integrations.bitrix24.emulator import APP_TOKEN
from integrations.telephony.generic import sign as generic_sign
from tests.conftest import B24_FORM, FIXTURES, create_account

SHARED = Path(__file__).parents[3].parent / "shared" / "fixtures"  # ../shared/fixtures, beside the repo
FIXTURE_DIRS = [d for d in (FIXTURES, SHARED) if d.is_dir()]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

MANGO_KEY, MANGO_SALT = "fx-mango-api-key", "fx-mango-api-salt"
MEGAFON_TOKEN = "fx-megafon-crm-token"
ZADARMA_SECRET = "fx-zadarma-secret"
SIPUNI_TOKEN = "sipuni-url-token-0123456789"
GENERIC_SECRET = "generic-shared-secret-0123456789"
# What Bitrix24 puts into an app's every delivery besides the application token.
EVENT_ACCESS, EVENT_REFRESH = "event-access-token-abcdef0123456789", "event-refresh-token-abcdef0123456789"
CLIENT_ID, CLIENT_SECRET = "local.6751a1b2c3.12345678", "s3cretS3cretS3cret"


def _lines(path: Path) -> list[tuple[str, str]]:
    rows = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return [tuple(ln.split("=", 1)) for ln in rows]  # type: ignore[misc]


def _form(pairs: list[tuple[str, str]]) -> str:
    return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in pairs)


async def _payloads(rt) -> list[InboxEvent]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(InboxEvent).order_by(InboxEvent.id)))


def _leaks(rows: list[InboxEvent], secrets: list[str]) -> list[tuple[int, str]]:
    found = []
    for row in rows:
        for secret in secrets:
            if any(form in row.payload for form in {secret, quote(secret, safe=""), quote_plus(secret)}):
                found.append((row.id, secret))
    return found


async def test_bitrix24_deliveries_keep_only_the_tokens_hash_and_the_install_still_works(client, rt, b24):
    b24.add_oauth_client(CLIENT_ID, CLIENT_SECRET)
    resp = await client.post(
        "/api/accounts",
        json={
            "name": "Портал",
            "crm": "bitrix24",
            "base_url": "https://demoshop.bitrix24.ru",
            "app": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "timezone": "Europe/Moscow",
        },
    )
    assert resp.status_code == 201, resp.text
    acc = resp.json()
    url = f"/hooks/bitrix24/{acc['key']}"
    install = b24.install_form(CLIENT_ID)
    install_tokens = {k: v for k, v in _pairs(install) if k in ("auth[access_token]", "auth[refresh_token]")}
    assert (await client.post(url, content=install, headers=B24_FORM)).status_code == 200
    await worker.drain(rt)
    client._transport.app.state.keys.invalidate()

    sent = 0
    for directory in FIXTURE_DIRS:
        for path in sorted((directory / "bitrix24").glob("ON*.txt")):
            pairs = [*_lines(path), ("auth[access_token]", EVENT_ACCESS), ("auth[refresh_token]", EVENT_REFRESH)]
            resp = await client.post(url, content=_form(pairs), headers=B24_FORM)
            assert resp.status_code == 200, (path, resp.text)
            sent += 1
    assert sent >= 5

    rows = await _payloads(rt)
    assert len(rows) >= 1 + len({p.name for d in FIXTURE_DIRS for p in (d / "bitrix24").glob("ON*.txt")})
    secrets = [APP_TOKEN, EVENT_ACCESS, EVENT_REFRESH, CLIENT_SECRET, *install_tokens.values()]
    assert _leaks(rows, secrets) == []
    token_hash = hashlib.sha256(APP_TOKEN.encode()).hexdigest()
    assert all(token_hash in r.payload for r in rows)  # what the README says is kept

    # The install was applied from the scrubbed row: the OAuth pair and the token's hash are the account's.
    async with rt.sessions() as s:
        account = await s.get(Account, acc["id"])
        creds = rt.box.open(account.credentials)
    assert creds["access_token"] == install_tokens["auth[access_token]"]
    assert creds["refresh_token"] == install_tokens["auth[refresh_token]"]
    assert account.webhook_secret_hash == token_hash and account.external_id == b24.member_id
    # And a forged token is still refused.
    forged = _form(_lines(FIXTURES / "bitrix24" / "ONCRMDEALADD.txt")).replace(APP_TOKEN, "0" * 32)
    assert (await client.post(url, content=forged, headers=B24_FORM)).status_code == 401
    # A delivery may not bring its own "hash" of the token: only the intake writes that field.
    sneaky = _form([("event", "ONAPPINSTALL"), ("auth[member_id]", "x"), ("auth[application_token_sha256]", "0" * 64)])
    assert (await client.post(url, content=sneaky, headers=B24_FORM)).status_code == 401


def _pairs(form: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(form, keep_blank_values=True)


async def test_no_pbx_callback_is_stored_with_its_secret_and_each_still_becomes_a_call(client, rt):
    acc = await create_account(client)
    settings = {
        "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
        "megafon": {"crm_token": MEGAFON_TOKEN},
        "zadarma": {"api_secret": ZADARMA_SECRET},
        "sipuni": {"token": SIPUNI_TOKEN},
        "generic": {"secret": GENERIC_SECRET},
    }
    for provider, secrets in settings.items():
        resp = await client.put(f"/api/accounts/{acc['id']}/telephony/{provider}", json={**secrets, "extensions": {}})
        assert resp.status_code == 200, resp.text
    base = "/hooks/telephony/{}/" + acc["key"]
    posted = 0
    for directory in FIXTURE_DIRS:
        tel = directory / "telephony"
        for path in sorted(tel.glob("mango_*.form")):
            resp = await client.post(
                base.format("mango") + "/events/summary", content=path.read_bytes().strip(), headers=FORM
            )
            assert resp.status_code == 200, (path, resp.text)
            posted += 1
        resp = await client.post(
            base.format("megafon"), content=(tel / "megafon_history.form").read_bytes().strip(), headers=FORM
        )
        assert resp.status_code == 200, resp.text
        for path in sorted(tel.glob("zadarma_*.http")):
            head, _, body = path.read_text().partition("\n\n")
            headers = dict(line.split(": ", 1) for line in head.splitlines())
            resp = await client.post(base.format("zadarma"), content=body.strip(), headers=headers)
            assert resp.status_code == 200, (path, resp.text)
        posted += 2
    fields = {"event": "2", "call_id": "sip-1", "src_type": "1", "src_num": "79991234567", "status": "ANSWER"}
    resp = await client.post(
        base.format("sipuni") + f"?token={SIPUNI_TOKEN}",
        content="&".join(f"{k}={v}" for k, v in fields.items()),
        headers=FORM,
    )
    assert resp.status_code == 200, resp.text
    resp = await client.get(base.format("sipuni"), params={**fields, "call_id": "sip-2", "token": SIPUNI_TOKEN})
    assert resp.status_code == 200, resp.text
    body = json.dumps({"call_id": "gen-1", "client_number": "+79991234567", "talk_seconds": 42}).encode()
    stamp = str(int(time.time()))
    resp = await client.post(
        base.format("generic"),
        content=body,
        headers={
            "webhook-id": "msg-1",
            "webhook-timestamp": stamp,
            "webhook-signature": generic_sign(GENERIC_SECRET, "msg-1", stamp, body),
            "content-type": "application/json",
        },
    )
    assert resp.status_code == 200, resp.text
    assert posted >= 5

    rows = await _payloads(rt)
    assert {r.source.removeprefix("telephony.") for r in rows} >= set(settings)
    secrets = [MANGO_KEY, MANGO_SALT, MEGAFON_TOKEN, ZADARMA_SECRET, SIPUNI_TOKEN, GENERIC_SECRET, DEMO_TOKEN]
    assert _leaks(rows, secrets) == []
    # Mango's sign is derived from the key: not kept either.
    assert not any("sign=" in r.payload for r in rows if r.source.endswith("mango"))

    await worker.drain(rt)
    rows = await _payloads(rt)
    assert [r.id for r in rows if r.status != "done"] == []
    async with rt.sessions() as s:
        providers = set(await s.scalars(select(Call.provider)))
    assert providers == set(settings)
