"""The Bitrix24 deal tab: each placement POST verified with the portal, then a page-scoped session."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from sqlalchemy import select

from app.accounts.models import Account
from app.db import utcnow
from app.findings.models import Finding, FindingEvent
from app.security import load_secret
from app.widget import session_token
from app.widget.models import WidgetConfig

PORTAL = "https://acme.bitrix24.ru"
MEMBER_ID = "da45a03b265edd8787f8a258d793cc5d"
GOOD_AUTH = "3cf49f6600631fcd00005a4b00000001f0f107d9825065d14b0d269c63cdaa0bb1967d"
DEAL = "3473"
PORTAL_USER = {
    "ID": "7",
    "ACTIVE": True,
    "NAME": "Анна",
    "LAST_NAME": "Смирнова",
    "EMAIL": "anna@acme.ru",
    "TIME_ZONE": "",
    "TIME_ZONE_OFFSET": 10800,
}


def placement_form(**over: str) -> dict[str, str]:
    """The CRM_DEAL_DETAIL_TAB handler's POST, as b24restdocs shows it."""
    return {
        "DOMAIN": "acme.bitrix24.ru",
        "PROTOCOL": "1",
        "LANG": "ru",
        "APP_SID": "d8286e173e919aa1695254997a6e3123",
        "AUTH_ID": GOOD_AUTH,
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "2c73c76600631fcd00005a4b00000001f0f1076f22983f060e8e14120e47cbc2c227a0",
        "member_id": MEMBER_ID,
        "status": "L",
        "PLACEMENT": "CRM_DEAL_DETAIL_TAB",
        "PLACEMENT_OPTIONS": json.dumps({"ID": DEAL}),
        **over,
    }


def portal_answer(request: httpx.Request) -> httpx.Response:
    auth = parse_qs(request.content.decode()).get("auth", [""])[0]
    if auth == GOOD_AUTH:
        return httpx.Response(200, json={"result": PORTAL_USER, "time": {"start": 1722841503.05, "duration": 0.04}})
    return httpx.Response(
        401, json={"error": "invalid_token", "error_description": "The access token provided is invalid."}
    )


@pytest.fixture
def portal():
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.post(f"{PORTAL}/rest/user.current.json").mock(side_effect=portal_answer)
        mock.route().pass_through()  # everything else (the app under test, the emulator) is real
        yield route


async def bitrix_account(rt) -> tuple[int, list[int]]:
    """A portal installed by the Bitrix24 app flow (member_id in external_id), with findings on two deals."""
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="Акме",
            crm="bitrix24",
            base_url=PORTAL,
            key="b24-key",
            auth_kind="oauth",
            credentials=rt.box.seal({}),
            external_id=MEMBER_ID,
            timezone="Europe/Moscow",
        )
        s.add(account)
        await s.flush()
        rows = [
            Finding(
                account_id=account.id,
                rule=rule,
                rule_version=1,
                entity_type="deal",
                entity_id=deal,
                deal_id=deal,
                manager_id="7",
                severity="warning",
                status="open",
                started_at=now - timedelta(days=4),
                opened_at=now - timedelta(days=1),
                times_opened=1,
            )
            for rule, deal in (("stuck_stage", DEAL), ("deal_without_task", DEAL), ("stuck_stage", "9999"))
        ]
        s.add_all(rows)
        await s.flush()
        return account.id, [r.id for r in rows]


def page_token(html: str) -> str:
    match = re.search(r'data-token="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def test_a_verified_placement_renders_the_deal_tab(client, rt, portal):
    _, ids = await bitrix_account(rt)
    resp = await client.post("/widget/bitrix24/deal-tab", data=placement_form())
    assert resp.status_code == 200, resp.text
    assert portal.call_count == 1
    html = resp.text
    assert "Анна Смирнова" in html and 'src="/widget/bitrix24/deal-tab.js"' in html
    assert "http://" not in html.replace("http://crmwatch.test", "") and "https://" not in html  # no CDN
    assert f"frame-ancestors {PORTAL}" in resp.headers["content-security-policy"]
    tok = page_token(html)
    claims = session_token.jwt.decode(tok, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600 and claims["deal"] == DEAL and claims["uid"] == "7"
    items = await client.get("/widget/bitrix24/findings", headers={"Authorization": f"Bearer {tok}"})
    assert items.status_code == 200
    assert {i["id"] for i in items.json()["items"]} == set(ids[:2])  # this deal's, not deal 9999's
    assert items.json()["items"][0]["message"].startswith("Сделка")
    for name in ("card-core", "deal-tab"):
        script = await client.get(f"/widget/bitrix24/{name}.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_acknowledge_and_snooze_from_the_tab_record_the_portal_user(client, rt, portal):
    _, ids = await bitrix_account(rt)
    tok = page_token((await client.post("/widget/bitrix24/deal-tab", data=placement_form())).text)
    auth = {"Authorization": f"Bearer {tok}"}
    ack = await client.post(f"/widget/bitrix24/findings/{ids[0]}/ack", headers=auth)
    assert ack.status_code == 200 and ack.json()["by"] == "user:7"
    snooze = await client.post(f"/widget/bitrix24/findings/{ids[1]}/snooze", json={"preset": "1w"}, headers=auth)
    assert snooze.status_code == 200
    async with rt.reads() as s:
        events = list(await s.scalars(select(FindingEvent).where(FindingEvent.finding_id.in_(ids[:2]))))
    assert {(e.finding_id, e.to_status, e.actor) for e in events} == {
        (ids[0], "acknowledged", "user:7"),
        (ids[1], "snoozed", "user:7"),
    }
    # The page's token is for its own deal: another deal's finding is out of reach.
    other = await client.post(f"/widget/bitrix24/findings/{ids[2]}/ack", headers=auth)
    assert other.status_code == 404
    left = (await client.get("/widget/bitrix24/findings", headers=auth)).json()["items"]
    assert left == []


async def test_a_forged_placement_is_refused_with_a_clear_page(client, rt, portal):
    await bitrix_account(rt)
    forged = await client.post("/widget/bitrix24/deal-tab", data=placement_form(AUTH_ID="made-up-token"))
    assert forged.status_code == 403
    assert "Вход не подтверждён" in forged.text and "data-token" not in forged.text
    # DOMAIN is the sender's claim: the check still goes to the portal stored at install.
    elsewhere = await client.post(
        "/widget/bitrix24/deal-tab", data=placement_form(AUTH_ID="made-up", DOMAIN="evil.example.com")
    )
    assert elsewhere.status_code == 403
    assert portal.call_count == 2 and all(c.request.url.host == "acme.bitrix24.ru" for c in portal.calls)
    unknown = await client.post("/widget/bitrix24/deal-tab", data=placement_form(member_id="0" * 32))
    assert unknown.status_code == 403 and "не подключён к crmwatch" in unknown.text
    assert portal.call_count == 2  # an unknown portal is not even asked
    english = await client.post("/widget/bitrix24/deal-tab", data=placement_form(AUTH_ID="x", LANG="en"))
    assert "Sign-in not confirmed" in english.text
    for broken in (
        placement_form(PLACEMENT_OPTIONS="not json"),
        placement_form(PLACEMENT_OPTIONS="{}"),
        placement_form(AUTH_ID=""),
        placement_form(PLACEMENT="CRM_LEAD_DETAIL_TAB"),
    ):
        resp = await client.post("/widget/bitrix24/deal-tab", data=broken)
        assert resp.status_code == 400 and "Неполный запрос" in resp.text


async def test_a_portal_that_does_not_answer_decides_nothing(client, rt):
    await bitrix_account(rt)
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.post(f"{PORTAL}/rest/user.current.json").mock(return_value=httpx.Response(503, text="maintenance"))
        mock.route().pass_through()
        resp = await client.post("/widget/bitrix24/deal-tab", data=placement_form())
    assert resp.status_code == 503 and "Битрикс24 не ответил" in resp.text


async def test_the_tab_session_lives_as_long_as_the_portals_auth_within_bounds(client, rt, portal):
    await bitrix_account(rt)
    for sent, lives in (("-5", 300), ("600", 600), ("86400", 3600), ("soon", 3600)):
        html = (await client.post("/widget/bitrix24/deal-tab", data=placement_form(AUTH_EXPIRES=sent))).text
        claims = session_token.jwt.decode(page_token(html), options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == lives, sent


async def test_the_tab_session_token_is_checked(client, rt, portal):
    account_id, ids = await bitrix_account(rt)
    secret = load_secret(rt.settings)
    for bad in ("", "Bearer", "Bearer nonsense", f"Basic {GOOD_AUTH}"):
        resp = await client.get("/widget/bitrix24/findings", headers={"Authorization": bad})
        assert resp.status_code == 401 and resp.json()["code"] in ("token_missing", "token_invalid")
    card = session_token.CardSession(account_id=account_id, deal_id=DEAL, user_id="7", crm="bitrix24")
    expired = session_token.issue(secret, card, timedelta(seconds=-120))
    resp = await client.get("/widget/bitrix24/findings", headers={"Authorization": f"Bearer {expired}"})
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"
    foreign = session_token.issue("another-server-secret", card, timedelta(minutes=5))
    resp = await client.post(f"/widget/bitrix24/findings/{ids[0]}/ack", headers={"Authorization": f"Bearer {foreign}"})
    assert resp.status_code == 401
    async with rt.reads() as s:
        assert (await s.get(Finding, ids[0])).status == "open"


async def test_the_amocrm_widget_secret_is_refused_for_a_bitrix24_portal(client, rt):
    account_id, _ = await bitrix_account(rt)
    resp = await client.put(f"/api/accounts/{account_id}/widget", json={"client_secret": "x" * 32})
    assert resp.status_code == 422 and "amoCRM" in resp.json()["detail"]
    async with rt.reads() as s:
        assert await s.get(WidgetConfig, account_id) is None
