"""Bitrix24 companies in the mirror, by name: ONCRMCOMPANYADD/UPDATE name a company the worker
reads with crm.company.get (at the wire with respx), ONCRMCOMPANYDELETE leaves a tombstone, an
older read never overwrites a newer one, and the ABC/XYZ report by company shows the names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import respx

from app.ingest import worker
from app.mirror.models import Company
from app.sync import service as sync
from integrations.bitrix24.demo_data import seed_portal
from tests.app.bitrix24.support import HOUR, NOW, seed
from tests.conftest import B24_FORM, b24_form, create_b24_account

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bitrix24"
HOOK = "https://demoshop.bitrix24.ru/rest/1/abc123secret"


def company_record(**changes: Any) -> dict[str, Any]:
    return {**json.loads((FIXTURES / "crm_company_get.json").read_text(encoding="utf-8"))["result"], **changes}


def batch_answer(request: httpx.Request, records: dict[str, Any]) -> httpx.Response:
    """Answers each crm.company.get of a batch from `records` (id → record; absent: Not found)."""
    commands = json.loads(request.content)["cmd"]
    result, errors = {}, {}
    for key, command in commands.items():
        assert command.startswith("crm.company.get?id="), command
        record = records.get(command.rsplit("=", 1)[1])
        if record is None:
            errors[key] = {"error": "", "error_description": "Not found"}
        else:
            result[key] = record
    return httpx.Response(200, json={"result": {"result": result, "result_error": errors}})


async def post(client, key: str, body: str) -> None:
    resp = await client.post(f"/hooks/bitrix24/{key}", content=body, headers=B24_FORM)
    assert resp.status_code == 200, resp.text


async def company(rt, account_id: int, company_id: str = "2917") -> Company | None:
    async with rt.sessions() as s:
        return await s.get(Company, (account_id, company_id))


async def test_a_company_event_is_read_through_the_rest_api_into_the_mirror(client, rt):
    acc = await create_b24_account(client)
    await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE"))
    rt.http_transport = None  # the real network transport, intercepted by respx
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"{HOOK}/batch.json").mock(side_effect=lambda r: batch_answer(r, {"2917": company_record()}))
        await worker.drain(rt)
    assert route.call_count == 1
    assert json.loads(route.calls[0].request.content)["cmd"] == {"company_2917": "crm.company.get?id=2917"}
    row = await company(rt, acc["id"])
    assert (row.name, row.responsible_user_id, row.is_deleted) == ("ООО «Ромашка»", "8", False)
    assert row.source_updated_at == datetime(2025, 11, 24, 16, 10, tzinfo=UTC)


async def test_an_older_read_loses_to_a_newer_one(client, rt):
    acc = await create_b24_account(client)
    newer = company_record(TITLE="ООО «Ромашка Плюс»", ASSIGNED_BY_ID="7", DATE_MODIFY="2025-11-25T10:00:00+03:00")
    older = company_record(TITLE="ООО «Ромашка»", ASSIGNED_BY_ID="8", DATE_MODIFY="2025-11-24T19:10:00+03:00")
    rt.http_transport = None
    with respx.mock(assert_all_called=False) as mock:
        # The portal answers the first read with the newer state, a later (delayed) read with an
        # older copy: e.g. a replica or cache behind the first answer, or an offline copy replayed.
        answers = iter([newer, older])
        mock.post(f"{HOOK}/batch.json").mock(side_effect=lambda r: batch_answer(r, {"2917": next(answers)}))
        await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE"))
        await worker.drain(rt)
        await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE", ts="1764000700"))
        await worker.drain(rt)
    row = await company(rt, acc["id"])
    assert (row.name, row.responsible_user_id) == ("ООО «Ромашка Плюс»", "7")
    assert row.source_updated_at == datetime(2025, 11, 25, 7, 0, tzinfo=UTC)


async def test_a_deleted_company_is_a_tombstone_a_late_read_cannot_revive(client, rt):
    acc = await create_b24_account(client)
    rt.http_transport = None
    with respx.mock(assert_all_called=False) as mock:
        records = {"2917": company_record()}
        route = mock.post(f"{HOOK}/batch.json").mock(side_effect=lambda r: batch_answer(r, records))
        await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE"))
        await worker.drain(rt)
        assert route.call_count == 1
        await post(client, acc["key"], b24_form("ONCRMCOMPANYDELETE"))
        await worker.drain(rt)
        assert route.call_count == 1  # a deletion needs no read
        row = await company(rt, acc["id"])
        assert row.is_deleted and row.name == "ООО «Ромашка»"  # the name stays for its past revenue
        # An update whose read still found the company (sent before the deletion, read after it).
        records["2917"] = company_record(TITLE="Другое имя", DATE_MODIFY="2025-11-26T10:00:00+03:00")
        await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE", ts="1764000950"))
        await worker.drain(rt)
        # A company read after it was deleted: Bitrix24 answers "Not found", which is a deletion too.
        del records["2917"]
        await post(client, acc["key"], b24_form("ONCRMCOMPANYUPDATE", **{"data[FIELDS][ID]": "31"}))
        await worker.drain(rt)
    row = await company(rt, acc["id"])
    assert row.is_deleted and row.name == "ООО «Ромашка»"
    gone = await company(rt, acc["id"], "31")
    assert gone is not None and gone.is_deleted and gone.name is None


async def test_abcxyz_by_company_on_a_bitrix24_portal_names_its_companies(client, rt, b24):
    seed(b24)  # company 2917 "ООО «Ромашка»" bought 90 000 (deal 4523, won 20 hours ago)
    b24.add_company(3001, "ИП Васильев", assigned_by=7, at=NOW - 90 * HOUR)
    b24.add_deal(4600, "Запчасти", "WON", assigned_by=7, opportunity=10000, company_id=3001, at=NOW - 30 * HOUR)
    acc = await create_b24_account(client)
    assert await sync.run_pending(rt) == 1  # the backfill: companies, and deals with their companyId
    # Then a manager renames a company in the portal: its event brings the new name.
    b24.update_company(3001, TITLE="ООО «Васильев и сыновья»", at=NOW - HOUR)
    await post(client, acc["key"], b24.event_form("ONCRMCOMPANYUPDATE", 3001))
    await worker.drain(rt)
    today = datetime.fromtimestamp(NOW, UTC).date()
    resp = await client.get(
        f"/api/accounts/{acc['id']}/reports/abcxyz",
        params={"from": str(today - timedelta(days=30)), "to": str(today + timedelta(days=1)), "by": "company"},
    )
    assert resp.status_code == 200, resp.text
    items = {i["client_id"]: i for i in resp.json()["items"]}
    assert {k: (v["name"], v["revenue"]) for k, v in items.items()} == {
        "2917": ("ООО «Ромашка»", 90000),
        "3001": ("ООО «Васильев и сыновья»", 10000),
    }
    assert items["2917"]["abc"] == "A" and items["3001"]["abc"] == "B"
    assert resp.json()["matrix"]["AZ"]["clients"] == 1


async def test_the_demo_portal_backfills_named_companies(client, rt, b24):
    seed_portal(b24, NOW)
    acc = await create_b24_account(client)
    assert await sync.run_pending(rt) == 1
    body = (await client.get(f"/api/accounts/{acc['id']}")).json()
    assert body["sync"]["counts"]["companies"] == 2
    today = datetime.fromtimestamp(NOW, UTC).date()
    resp = await client.get(
        f"/api/accounts/{acc['id']}/reports/abcxyz",
        params={"from": str(today - timedelta(days=30)), "to": str(today + timedelta(days=1)), "by": "company"},
    )
    assert [(i["client_id"], i["name"]) for i in resp.json()["items"]] == [("401", "ООО «Ромашка»")]  # won 4524
