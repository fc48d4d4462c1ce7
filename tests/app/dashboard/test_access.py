"""Who sees what on the dashboard: links, amoCRM's widget token, the Bitrix24 app page; and that a
forged, expired, revoked or foreign way in sees nothing and stores nothing."""

from __future__ import annotations

from datetime import timedelta

import httpx
import respx
from sqlalchemy import func, select, update

from app.accounts.models import Account
from app.dashboard import access
from app.dashboard.models import DashboardLink
from app.db import utcnow
from app.logging import mask_path
from app.security import load_secret
from app.widget import session_token
from app.widget.models import WidgetTokenUse
from integrations.amocrm.widget_host import mint_token
from tests.app.reports import scenario
from tests.app.widget.test_widget_bitrix24_tab import GOOD_AUTH, MEMBER_ID, PORTAL, PORTAL_USER

SECRET = "integration-secret-0123456789abcdef"
AUDIENCE = "https://crmwatch.example.com"
AMO = "https://demoshop.amocrm.ru"
PERIOD = {"from": "2026-11-02", "to": "2026-11-06"}


async def _account(rt, aid: int) -> Account:
    async with rt.reads() as s:
        return await s.get(Account, aid)


async def _links(rt) -> int:
    async with rt.reads() as s:
        return await s.scalar(select(func.count()).select_from(DashboardLink))


async def _managers(client, auth: str) -> httpx.Response:
    return await client.get("/dashboard/api/managers", params=PERIOD, headers={"Authorization": auth})


async def test_links_team_manager_revoked_expired(rt, client) -> None:
    aid = await scenario.build(rt)
    team = await client.post(f"/api/accounts/{aid}/dashboard/links", json={"expires_in_days": 7})
    assert team.status_code == 201, team.text
    url = team.json()["url"]
    assert url.startswith("http://crmwatch.test/dashboard/l/")
    secret = url.rsplit("/", 1)[1]
    page = await client.get(f"/dashboard/l/{secret}", headers={"Authorization": ""})
    assert page.status_code == 200 and "crmwatch-dashboard" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    seen = await _managers(client, f"Link {secret}")
    assert [i["manager_id"] for i in seen.json()["items"]] == ["101", "102", "103"]

    mine = await client.post(f"/api/accounts/{aid}/dashboard/links", json={"manager_id": "102"})
    own = mine.json()["url"].rsplit("/", 1)[1]
    only = await _managers(client, f"Link {own}")
    assert [i["manager_id"] for i in only.json()["items"]] == ["102"]
    deals = await client.get("/dashboard/api/deals", headers={"Authorization": f"Link {own}"})
    assert [d["deal_id"] for d in deals.json()] == ["D3"]
    funnel = await client.get(
        "/dashboard/api/funnel", params={**PERIOD, "pipeline_id": "P1"}, headers={"Authorization": f"Link {own}"}
    )
    assert [m["manager_id"] for m in funnel.json()["by_manager"]] == ["102"]
    # The secret is not kept, and is never shown again.
    listed = (await client.get(f"/api/accounts/{aid}/dashboard/links")).json()
    assert all(item["url"] is None for item in listed) and len(listed) == 2

    assert (await client.delete(f"/api/accounts/{aid}/dashboard/links/{team.json()['id']}")).status_code == 204
    gone = await client.get(f"/dashboard/l/{secret}")
    assert gone.status_code == 410 and 'data-crmwatch-refusal="revoked"' in gone.text
    assert (await _managers(client, f"Link {secret}")).status_code == 401

    async with rt.sessions() as s, s.begin():
        await s.execute(
            update(DashboardLink)
            .where(DashboardLink.id == mine.json()["id"])
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    expired = await client.get(f"/dashboard/l/{own}")
    assert expired.status_code == 410 and "Срок ссылки истёк" in expired.text
    assert (await _managers(client, f"Link {own}")).status_code == 401
    forged = await client.get("/dashboard/l/not-a-real-link-secret")
    assert forged.status_code == 404 and 'data-crmwatch-refusal="unknown"' in forged.text


async def test_bad_link_requests_store_nothing(rt, client) -> None:
    aid = await scenario.build(rt)
    for body in (
        {"manager_id": "999"},
        {"expires_in_days": 0},
        {"expires_in_days": 400},
        {"manager_id": "a b"},
        {"who": "everyone"},
    ):
        resp = await client.post(f"/api/accounts/{aid}/dashboard/links", json=body)
        assert resp.status_code == 422, (body, resp.text)
    no_admin = await client.post(f"/api/accounts/{aid}/dashboard/links", json={}, headers={"Authorization": ""})
    assert no_admin.status_code == 401
    assert (await client.post("/api/accounts/9999/dashboard/links", json={})).status_code == 404
    assert await _links(rt) == 0
    assert (await client.get("/dashboard/api/managers", headers={"Authorization": ""})).status_code == 401
    assert (await _managers(client, "Bearer not-a-session")).status_code == 401


async def _amocrm_account(rt, client, aid: int) -> None:
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == aid).values(external_id="29876543", subdomain="demoshop"))
    resp = await client.put(f"/api/accounts/{aid}/widget", json={"client_secret": SECRET, "audience": AUDIENCE})
    assert resp.status_code == 200, resp.text


def _token(user_id: int, *, secret: str = SECRET, is_admin: bool = False, lifetime: int = 1800) -> str:
    return mint_token(
        secret,
        base_url=AMO,
        audience=AUDIENCE,
        account_id=29876543,
        subdomain="demoshop",
        user_id=user_id,
        is_admin=is_admin,
        lifetime=lifetime,
    )


async def _session(client, token: str) -> httpx.Response:
    return await client.post(
        "/widget/amocrm/dashboard/session", headers={"X-Auth-Token": token, "Origin": AMO, "Authorization": ""}
    )


async def test_amocrm_manager_admin_and_supervisors(rt, client) -> None:
    aid = await scenario.build(rt)
    await _amocrm_account(rt, client, aid)
    manager = await _session(client, _token(101))
    assert manager.status_code == 200, manager.text
    assert manager.headers["access-control-allow-origin"] == AMO
    assert "/dashboard/view?lang=ru#s=" in manager.json()["url"]
    rows = await _managers(client, f"Bearer {manager.json()['session']}")
    assert [i["manager_id"] for i in rows.json()["items"]] == ["101"]

    admin = await _session(client, _token(555, is_admin=True))
    rows = await _managers(client, f"Bearer {admin.json()['session']}")
    assert [i["manager_id"] for i in rows.json()["items"]] == ["101", "102", "103"]

    # A team's supervisor sees the team and themselves; the account's head of sales sees everyone.
    doc = {"team_supervisors": {"101": "103", "102": "104"}, "supervisor_user_id": "105"}
    assert (await client.put(f"/api/accounts/{aid}/rules", json=doc)).status_code == 200
    sup = await _session(client, _token(103))
    rows = await _managers(client, f"Bearer {sup.json()['session']}")
    assert [i["manager_id"] for i in rows.json()["items"]] == ["101", "103"]
    head = await _session(client, _token(105))
    rows = await _managers(client, f"Bearer {head.json()['session']}")
    assert len(rows.json()["items"]) == 3


async def test_amocrm_forged_expired_foreign_see_nothing(rt, client) -> None:
    aid = await scenario.build(rt)
    await _amocrm_account(rt, client, aid)
    async with rt.reads() as s:
        burned = await s.scalar(select(func.count()).select_from(WidgetTokenUse))
    forged = await _session(client, _token(101, secret="not-the-secret-at-all-0123456789"))
    assert forged.status_code == 401 and forged.json()["code"] == "token_invalid"
    expired = await _session(
        client,
        mint_token(
            SECRET,
            base_url=AMO,
            audience=AUDIENCE,
            account_id=29876543,
            subdomain="demoshop",
            user_id=101,
            now=1_700_000_000,
        ),
    )
    assert expired.status_code == 401 and expired.json()["code"] == "token_expired"
    foreign = await client.post(
        "/widget/amocrm/dashboard/session", headers={"X-Auth-Token": _token(101), "Origin": "https://evil.example.com"}
    )
    assert foreign.status_code == 401 and "access-control-allow-origin" not in foreign.headers
    async with rt.reads() as s:
        # Refused tokens burn nothing (the foreign origin's token is checked first, then refused in
        # the same rolled-back transaction).
        assert await s.scalar(select(func.count()).select_from(WidgetTokenUse)) == burned
    # A deal card's session never opens the dashboard.
    card = session_token.issue(
        load_secret(rt.settings),
        session_token.CardSession(account_id=aid, deal_id="D1", user_id="101", crm="amocrm"),
        timedelta(minutes=5),
    )
    refused = await _managers(client, f"Bearer {card}")
    assert refused.status_code == 401 and refused.json()["code"] == "token_invalid"
    # A dashboard session past its hour, and one signed with another server's secret.
    account = await _account(rt, aid)
    old = session_token.issue(
        load_secret(rt.settings),
        session_token.CardSession(account_id=aid, deal_id="dashboard:team", user_id="101", crm=account.crm),
        timedelta(seconds=-60),
    )
    expired_session = await _managers(client, f"Bearer {old}")
    assert expired_session.status_code == 401 and expired_session.json()["code"] == "token_expired"
    other = access.issue_session("another-server-secret", account, "101", True)
    assert (await _managers(client, f"Bearer {other}")).status_code == 401


async def test_bitrix24_app_page(rt, client) -> None:
    aid = await scenario.build(rt, crm="bitrix24")
    portal = PORTAL
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == aid).values(external_id=MEMBER_ID, base_url=portal))

    def user_current(request: httpx.Request) -> httpx.Response:
        if f"auth={GOOD_AUTH}" in request.content.decode():
            return httpx.Response(200, json={"result": {**PORTAL_USER, "ID": "102"}})
        return httpx.Response(401, json={"error": "invalid_token"})

    form = {"AUTH_ID": GOOD_AUTH, "member_id": MEMBER_ID, "LANG": "ru"}
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        mock.post(f"{portal}/rest/user.current.json").mock(side_effect=user_current)
        admin = mock.post(f"{portal}/rest/user.admin.json").mock(
            return_value=httpx.Response(200, json={"result": False})
        )
        mock.route().pass_through()  # the app under test is real
        page = await client.post("/dashboard/bitrix24", data=form, headers={"Authorization": ""})
        assert page.status_code == 200, page.text
        assert admin.called
        assert f"frame-ancestors {portal}" in page.headers["content-security-policy"]
        auth = page.text.split('data-auth="', 1)[1].split('"', 1)[0]
        rows = await _managers(client, auth)
        assert [i["manager_id"] for i in rows.json()["items"]] == ["102"]
        admin.mock(return_value=httpx.Response(200, json={"result": True}))
        page = await client.post("/dashboard/bitrix24", data=form)
        auth = page.text.split('data-auth="', 1)[1].split('"', 1)[0]
        assert len((await _managers(client, auth)).json()["items"]) == 3
        forged = await client.post("/dashboard/bitrix24", data={**form, "AUTH_ID": "forged"})
        assert forged.status_code == 403 and 'data-crmwatch-refusal="forged"' in forged.text
        foreign = await client.post("/dashboard/bitrix24", data={**form, "member_id": "another-portal"})
        assert foreign.status_code == 403 and 'data-crmwatch-refusal="not_installed"' in foreign.text


def test_link_secrets_never_reach_the_logs() -> None:
    assert mask_path("/dashboard/l/Zx9secret-link_value") == "/dashboard/l/***"
    assert mask_path("/dashboard/l/Zx9secret?lang=en") == "/dashboard/l/***?lang=en"
    assert mask_path("/dashboard/view") == "/dashboard/view"
