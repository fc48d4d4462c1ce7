"""The plan contract: PUT / GET /api/accounts/{id}/plans/{YYYY-MM}, on both databases."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from app.mirror.models import User
from app.plans.models import Plan
from app.runtime import Runtime
from tests.conftest import create_account


async def _plans(rt: Runtime) -> int:
    async with rt.reads() as s:
        return int(await s.scalar(select(func.count()).select_from(Plan)))


async def test_put_then_get_round_trip(client: httpx.AsyncClient, rt: Runtime) -> None:
    account = await create_account(client)
    aid = account["id"]
    async with rt.sessions() as s, s.begin():
        s.add_all([User(account_id=aid, id="101", name="Анна"), User(account_id=aid, id="102", name="Борис")])
    body = {"managers": {"101": {"revenue": 300000, "won_deals": 3}, "102": {"won_deals": 5}, "999": {"revenue": 1.5}}}
    put = await client.put(f"/api/accounts/{aid}/plans/2026-11", json=body)
    assert put.status_code == 200, put.text
    assert put.json()["managers"] == {
        "101": {"revenue": 300000.0, "won_deals": 3},
        "102": {"won_deals": 5},
        "999": {"revenue": 1.5},
    }
    # A manager the mirror does not know is kept, and said.
    assert len(put.json()["warnings"]) == 1 and "'999'" in put.json()["warnings"][0]
    got = await client.get(f"/api/accounts/{aid}/plans/2026-11")
    assert got.status_code == 200
    assert got.json() == {"month": "2026-11", "managers": put.json()["managers"], "warnings": []}
    # Another month is untouched (and empty), and a PUT replaces the whole month.
    assert (await client.get(f"/api/accounts/{aid}/plans/2026-12")).json()["managers"] == {}
    again = await client.put(f"/api/accounts/{aid}/plans/2026-11", json={"managers": {"102": {"won_deals": 4}}})
    assert again.json()["managers"] == {"102": {"won_deals": 4}}
    assert await _plans(rt) == 1


@pytest.mark.parametrize(
    ("month", "body", "where"),
    [
        ("2026-13", {"managers": {}}, "month"),
        ("2026-1", {"managers": {}}, "month"),
        ("26-11", {"managers": {}}, "month"),
        ("2026-11", {"managers": {"101": {"revenue": -1}}}, "revenue"),
        ("2026-11", {"managers": {"101": {"won_deals": -3}}}, "won_deals"),
        ("2026-11", {"managers": {"101": {"won_deals": 2.5}}}, "won_deals"),
        ("2026-11", {"managers": {"101": {"won_deals": True}}}, "won_deals"),
        ("2026-11", {"managers": {"101": {"revenue": "100"}}}, "revenue"),
        ("2026-11", {"managers": {"101": {"revenue": 10, "bonus": 1}}}, "bonus"),
        ("2026-11", {"managers": {"101": {}}}, "101"),
        ("2026-11", {"managers": {"a b": {"revenue": 1}}}, "managers"),
        ("2026-11", {"managers": {}, "year": 2026}, "year"),
        ("2026-11", {}, "managers"),
    ],
)
async def test_bad_input_is_422_and_stores_nothing(
    client: httpx.AsyncClient, rt: Runtime, month: str, body: dict, where: str
) -> None:
    aid = (await create_account(client))["id"]
    resp = await client.put(f"/api/accounts/{aid}/plans/{month}", json=body)
    assert resp.status_code == 422, resp.text
    assert where in resp.text
    assert await _plans(rt) == 0


async def test_bad_month_on_get_and_unknown_account(client: httpx.AsyncClient) -> None:
    aid = (await create_account(client))["id"]
    assert (await client.get(f"/api/accounts/{aid}/plans/2026-00")).status_code == 422
    # Year 0 was a 500 under fuzzing (no date before it to count history from).
    assert (await client.get(f"/api/accounts/{aid}/plans/0000-01")).status_code == 422
    assert (await client.get(f"/api/accounts/{aid}/reports/plan", params={"month": "0000-01"})).status_code == 422
    assert (await client.get("/api/accounts/9999/plans/2026-11")).status_code == 404
    put = await client.put("/api/accounts/9999/plans/2026-11", json={"managers": {"1": {"revenue": 1}}})
    assert put.status_code == 404


async def test_admin_token_required(client: httpx.AsyncClient) -> None:
    aid = (await create_account(client))["id"]
    resp = await client.get(f"/api/accounts/{aid}/plans/2026-11", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
