"""The amoCRM widget's API: every check on the disposable token, and what a verified call may do."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import jwt
from sqlalchemy import func, select

from app.accounts.models import Account
from app.findings.models import Finding, FindingEvent
from app.main import create_app
from app.runtime import Runtime
from app.widget import amocrm_token
from app.widget.models import WidgetConfig, WidgetTokenUse
from tests.app.widget.widget_support import (
    AUDIENCE,
    MANAGER,
    ORIGIN,
    SECRET,
    add_other_amocrm_account,
    deal_with_findings,
    token,
    widget_account,
)

URL = "/widget/amocrm/findings"


def headers(tok: str, origin: str = ORIGIN) -> dict[str, str]:
    return {"X-Auth-Token": tok, "Origin": origin, "Authorization": ""}


async def burned(rt) -> int:
    async with rt.reads() as s:
        return await s.scalar(select(func.count()).select_from(WidgetTokenUse)) or 0


async def test_a_valid_token_lists_the_leads_open_findings_for_its_own_domain(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, expected = await deal_with_findings(client, acc)
    resp = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {i["id"] for i in body["items"]} == {i["id"] for i in expected}
    first = body["items"][0]
    assert first["title"] and first["message"] and first["severity"] in ("warning", "info") and first["since"]
    assert body["lang"] == "ru"
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    english = await client.get(URL, params={"lead_id": deal_id, "lang": "en"}, headers=headers(token()))
    assert english.json()["lang"] == "en" and english.json()["items"][0]["title"] != first["title"]
    assert await burned(rt) == 2


async def test_bad_signature_is_refused_and_burns_nothing(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, _ = await deal_with_findings(client, acc)
    wrong = token(secret="not-the-integration-secret-0123456789")
    resp = await client.get(URL, params={"lead_id": deal_id}, headers=headers(wrong))
    assert resp.status_code == 401
    assert resp.json()["code"] == "token_invalid" and "signature" in resp.json()["detail"]
    # The page is a known account's, so it may read why (the widget shows a clear message).
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    tampered = token()[:-3] + ("AAA" if not token().endswith("AAA") else "BBB")
    assert (await client.get(URL, params={"lead_id": deal_id}, headers=headers(tampered))).status_code == 401
    none_alg = token().split(".")
    none_alg[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    resp = await client.get(URL, params={"lead_id": deal_id}, headers=headers(".".join([*none_alg[:2], ""])))
    assert resp.status_code == 401 and resp.json()["code"] == "token_invalid"
    assert (await client.get(URL, params={"lead_id": deal_id}, headers=headers("garbage"))).status_code == 401
    missing = await client.get(URL, params={"lead_id": deal_id}, headers={"Origin": ORIGIN, "Authorization": ""})
    assert missing.status_code == 401 and missing.json()["code"] == "token_missing"
    assert await burned(rt) == 0


async def test_wrong_audience_is_refused(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, _ = await deal_with_findings(client, acc)
    resp = await client.get(
        URL, params={"lead_id": deal_id}, headers=headers(token(audience="https://someone-elses-integration.example"))
    )
    assert resp.status_code == 401 and resp.json()["code"] == "token_invalid"
    assert AUDIENCE in resp.json()["detail"]
    assert await burned(rt) == 0


async def test_expired_token_says_the_session_expired(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, _ = await deal_with_findings(client, acc)
    old = int(time.time()) - 3600
    resp = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token(now=old)))
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"
    # A token that claims to live longer than amoCRM's 30 minutes is not amoCRM's.
    long_lived = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token(lifetime=24 * 3600)))
    assert long_lived.status_code == 401 and "30 minutes" in long_lived.json()["detail"]
    assert await burned(rt) == 0


async def test_a_replayed_jti_is_refused_in_another_process_too(client, rt, amo, settings):
    acc = await widget_account(client, rt, amo)
    deal_id, _ = await deal_with_findings(client, acc)
    tok = token()
    assert (await client.get(URL, params={"lead_id": deal_id}, headers=headers(tok))).status_code == 200
    again = await client.get(URL, params={"lead_id": deal_id}, headers=headers(tok))
    assert again.status_code == 401 and again.json()["code"] == "token_replayed"
    # A second crmwatch process on the same database knows the jti as well.
    other = Runtime.build(settings)
    try:
        app2 = create_app(runtime=other, run_workers=False)
        async with (
            app2.router.lifespan_context(app2),
            httpx.AsyncClient(transport=httpx.ASGITransport(app2), base_url="http://crmwatch.test") as c2,
        ):
            resp = await c2.get(URL, params={"lead_id": deal_id}, headers=headers(tok))
            assert resp.status_code == 401 and resp.json()["code"] == "token_replayed"
            fresh = await c2.get(URL, params={"lead_id": deal_id}, headers=headers(token()))
            assert fresh.status_code == 200
    finally:
        await other.dispose()
    # Same jti, new signature and times: still the same token id, still refused.
    same_jti = token(jti=jwt.decode(tok, options={"verify_signature": False})["jti"])
    assert (await client.get(URL, params={"lead_id": deal_id}, headers=headers(same_jti))).status_code == 401


async def test_burned_jtis_are_forgotten_once_their_token_expired(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, _ = await deal_with_findings(client, acc)
    async with rt.sessions() as s, s.begin():
        s.add(WidgetTokenUse(account_id=acc["id"], jti="old-one", expires_at=datetime.now(UTC) - timedelta(hours=1)))
        s.add(WidgetTokenUse(account_id=acc["id"], jti="live-one", expires_at=datetime.now(UTC) + timedelta(hours=1)))
    amocrm_token._last_purge = 0.0
    assert (await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))).status_code == 200
    async with rt.reads() as s:
        left = set(await s.scalars(select(WidgetTokenUse.jti)))
    assert "old-one" not in left and "live-one" in left and len(left) == 2


async def test_another_accounts_token_sees_and_changes_nothing_here(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, items = await deal_with_findings(client, acc)
    other_secret = "the-other-integration-secret-xyz"
    await add_other_amocrm_account(
        client, rt, base_url="https://othershop.amocrm.ru", external_id="111", secret=other_secret
    )
    theirs = {
        "secret": other_secret,
        "base_url": "https://othershop.amocrm.ru",
        "account_id": 111,
        "subdomain": "othershop",
    }
    # Their valid token works on their own account, where this deal has no findings...
    resp = await client.get(
        URL, params={"lead_id": deal_id}, headers=headers(token(**theirs), "https://othershop.amocrm.ru")
    )
    assert resp.status_code == 200 and resp.json()["items"] == []
    # ...and cannot acknowledge ours.
    ack = await client.post(
        f"/widget/amocrm/findings/{items[0]['id']}/ack", headers=headers(token(**theirs), "https://othershop.amocrm.ru")
    )
    assert ack.status_code == 404
    # Their secret signing our account's claims is a forgery.
    forged = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token(secret=other_secret)))
    assert forged.status_code == 401 and forged.json()["code"] == "token_invalid"
    # Our token sent from their page, or issued by another address, is refused.
    wrong_page = await client.get(
        URL, params={"lead_id": deal_id}, headers=headers(token(), "https://othershop.amocrm.ru")
    )
    assert wrong_page.status_code == 401
    wrong_iss = await client.get(
        URL, params={"lead_id": deal_id}, headers=headers(token(base_url="https://othershop.amocrm.ru"))
    )
    assert wrong_iss.status_code == 401 and "another amoCRM address" in wrong_iss.json()["detail"]
    # An account nobody connected.
    stranger = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token(account_id=5, subdomain="x")))
    assert stranger.status_code == 401 and "no amoCRM account" in stranger.json()["detail"]
    async with rt.reads() as s:
        finding = await s.get(Finding, items[0]["id"])
    assert finding is not None and finding.status == "open"


async def test_acknowledge_and_snooze_record_the_amocrm_user(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, items = await deal_with_findings(client, acc, at_least=2)
    a, b = items[0]["id"], items[1]["id"]
    resp = await client.post(f"/widget/amocrm/findings/{a}/ack", headers=headers(token()))
    assert resp.status_code == 200
    assert resp.json() == {
        "id": a,
        "status": "acknowledged",
        "by": f"user:{MANAGER}",
        "until": None,
        "until_label": None,
    }
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    detail = (await client.get(f"/api/findings/{a}")).json()
    assert detail["status"] == "acknowledged" and detail["acknowledged_by"] == f"user:{MANAGER}"
    assert detail["history"][-1]["actor"] == f"user:{MANAGER}" and detail["history"][-1]["to_status"] == "acknowledged"

    bad = await client.post(f"/widget/amocrm/findings/{b}/snooze", json={"preset": "forever"}, headers=headers(token()))
    assert bad.status_code == 422
    snoozed = await client.post(
        f"/widget/amocrm/findings/{b}/snooze", json={"preset": "tomorrow"}, headers=headers(token())
    )
    assert snoozed.status_code == 200, snoozed.text
    until = datetime.fromisoformat(snoozed.json()["until"])
    local = until.astimezone(ZoneInfo("Europe/Moscow"))
    assert until > datetime.now(UTC) and local.hour == 9 and local.minute == 0  # the next working morning
    detail = (await client.get(f"/api/findings/{b}")).json()
    assert detail["snoozed_by"] == f"user:{MANAGER}" and detail["history"][-1]["actor"] == f"user:{MANAGER}"
    # The card no longer lists either.
    left = (await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))).json()["items"]
    assert not {a, b} & {i["id"] for i in left}
    hour = await client.post(f"/widget/amocrm/findings/{b}/snooze", json={"preset": "1h"}, headers=headers(token()))
    hour_until = datetime.fromisoformat(hour.json()["until"])
    assert timedelta(minutes=59) < hour_until - datetime.now(UTC) <= timedelta(hours=1)
    week = await client.post(f"/widget/amocrm/findings/{b}/snooze", json={"preset": "1w"}, headers=headers(token()))
    assert datetime.fromisoformat(week.json()["until"]) - datetime.now(UTC) > timedelta(days=6, hours=23)
    again = await client.post(f"/widget/amocrm/findings/{a}/ack", headers=headers(token()))
    assert again.status_code == 200 and again.json()["status"] == "acknowledged"  # idempotent: nothing new
    async with rt.reads() as s:
        events = await s.scalar(
            select(func.count())
            .select_from(FindingEvent)
            .where(FindingEvent.finding_id == a, FindingEvent.to_status == "acknowledged")
        )
    assert events == 1


async def test_cors_preflight_is_open_only_to_connected_amocrm_addresses(client, rt, amo):
    await widget_account(client, rt, amo)
    ask = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-auth-token",
        "Authorization": "",
    }
    ok = await client.options(URL, headers=ask)
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Auth-Token" in ok.headers["access-control-allow-headers"]
    evil = await client.options(URL, headers={**ask, "Origin": "https://evil.example"})
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    # A refusal seen from a stranger's page carries no CORS grant either.
    resp = await client.get(URL, params={"lead_id": "1"}, headers=headers("garbage", "https://evil.example"))
    assert resp.status_code == 401 and "access-control-allow-origin" not in resp.headers


async def test_an_account_without_a_secret_says_so(client, rt, amo):
    acc = await widget_account(client, rt, amo, secret=None)
    deal_id, _ = await deal_with_findings(client, acc)
    resp = await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))
    assert resp.status_code == 401 and resp.json()["code"] == "widget_not_configured"
    shown = (await client.get(f"/api/accounts/{acc['id']}/widget")).json()
    assert shown == {"account_id": acc["id"], "secret_source": None, "audience": "http://crmwatch.test"}


async def test_the_secret_is_sealed_and_never_echoed(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    shown = await client.get(f"/api/accounts/{acc['id']}/widget")
    assert shown.json() == {"account_id": acc["id"], "secret_source": "widget", "audience": AUDIENCE}
    assert SECRET not in shown.text
    async with rt.reads() as s:
        config = await s.get(WidgetConfig, acc["id"])
    assert config is not None and SECRET.encode() not in config.secret
    assert rt.box.open(config.secret) == {"client_secret": SECRET}
    short = await client.put(f"/api/accounts/{acc['id']}/widget", json={"client_secret": "short"})
    assert short.status_code == 422
    unknown = await client.put(f"/api/accounts/{acc['id']}/widget", json={"secret": SECRET})
    assert unknown.status_code == 422
    anonymous = await client.put(
        f"/api/accounts/{acc['id']}/widget", json={"client_secret": "x" * 20}, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    assert (await client.put("/api/accounts/999/widget", json={"client_secret": "x" * 20})).status_code == 404
    async with rt.reads() as s:
        config = await s.get(WidgetConfig, acc["id"])
    assert rt.box.open(config.secret) == {"client_secret": SECRET}  # nothing above changed it


async def test_an_oauth_accounts_client_secret_and_redirect_uri_sign_its_tokens(rt):
    account = Account(
        id=1,
        name="x",
        crm="amocrm",
        base_url="https://demoshop.amocrm.ru",
        key="k",
        auth_kind="oauth",
        credentials=rt.box.seal(
            {
                "client_id": "c",
                "client_secret": "oauth-secret",
                "redirect_uri": "https://hooks.example.com/amocrm/callback?x=1",
            }
        ),
    )
    key = amocrm_token.signing_key(account, None, rt.box, "http://crmwatch.test")
    assert key == amocrm_token.SigningKey(secret="oauth-secret", audience="https://hooks.example.com")
    plain = Account(
        id=2,
        name="y",
        crm="amocrm",
        base_url="https://a.amocrm.ru",
        key="k2",
        auth_kind="token",
        credentials=rt.box.seal({"access_token": "t"}),
    )
    assert amocrm_token.signing_key(plain, None, rt.box, "http://crmwatch.test") is None


async def test_an_audience_longer_than_its_column_is_refused_and_nothing_changes(client, rt, amo):
    """Found by schemathesis: a 2,000-character audience URL was a 500 on PostgreSQL."""
    acc = await widget_account(client, rt, amo, secret=None)
    before = (await client.get(f"/api/accounts/{acc['id']}/widget")).json()
    long_url = "https://" + ".".join(["a" * 60] * 33) + ".example"
    resp = await client.put(f"/api/accounts/{acc['id']}/widget", json={"audience": long_url})
    assert resp.status_code == 422 and "audience" in resp.text
    assert (await client.get(f"/api/accounts/{acc['id']}/widget")).json() == before
