"""The payment fields an account names, and the mirror keeping those custom fields of deals (only
those), from amoCRM webhooks and API v4, and from Bitrix24's crm.item.get / crm.item.list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.accounts.models import Account
from app.ingest import worker
from app.mirror.fields import same_value
from app.mirror.models import Deal
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from integrations.amocrm.webhook import parse
from integrations.bitrix24 import mapping
from tests.app.bitrix24.support import seed as seed_b24
from tests.conftest import B24_FORM, FIXTURES, FORM, b24_form, create_account, create_b24_account, form_body

AMO_FIELDS = {"date_field": "700101", "amount_field": "700102", "paid_field": "700103"}
NOW = int(datetime.now(UTC).timestamp())


async def _deal(rt, aid: int, deal_id: str) -> Deal:
    async with rt.sessions() as s:
        return await s.get(Deal, (aid, deal_id))


async def _deal_fields(rt, aid: int):
    async with rt.sessions() as s:
        return await s.scalar(select(Account.deal_fields).where(Account.id == aid))


# --- the settings ------------------------------------------------------------------------------------


async def test_put_then_get_and_the_warning_about_old_deals(client, rt):
    aid = (await create_account(client))["id"]
    empty = await client.get(f"/api/accounts/{aid}/payments/settings")
    assert empty.status_code == 200
    assert empty.json() == {"date_field": None, "amount_field": None, "paid_field": None, "warnings": []}
    put = await client.put(f"/api/accounts/{aid}/payments/settings", json=AMO_FIELDS)
    assert put.status_code == 200, put.text
    assert {k: put.json()[k] for k in AMO_FIELDS} == AMO_FIELDS
    assert "POST /api/accounts" in put.json()["warnings"][0]  # new fields: old deals need a sync
    assert await _deal_fields(rt, aid) == {"payment_date": "700101", "payment_amount": "700102", "paid": "700103"}
    got = (await client.get(f"/api/accounts/{aid}/payments/settings")).json()
    assert got == {**AMO_FIELDS, "warnings": []}
    # The same fields again add nothing to fetch; all null switches the report off.
    assert (await client.put(f"/api/accounts/{aid}/payments/settings", json=AMO_FIELDS)).json()["warnings"] == []
    off = await client.put(f"/api/accounts/{aid}/payments/settings", json={})
    assert off.status_code == 200 and await _deal_fields(rt, aid) is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"date_field": "UF_CRM_123"}, "date_field"),  # a Bitrix24 name on amoCRM
        ({"date_field": "12a"}, "date_field"),
        ({"date_field": 700101}, "date_field"),  # a number is not a field id string
        ({"date_field": "700101", "paid_field": "700101"}, "different"),
        ({"date_field": "700101", "color": "red"}, "color"),
        ({"amount_field": "1" * 65}, "amount_field"),
    ],
)
async def test_bad_fields_are_422_and_store_nothing(client, rt, body, where):
    aid = (await create_account(client))["id"]
    resp = await client.put(f"/api/accounts/{aid}/payments/settings", json=body)
    assert resp.status_code == 422, resp.text
    assert where in resp.text
    assert await _deal_fields(rt, aid) is None


async def test_bitrix24_takes_uf_crm_names_only(client, rt):
    aid = (await create_b24_account(client))["id"]
    bad = await client.put(f"/api/accounts/{aid}/payments/settings", json={"date_field": "700101"})
    assert bad.status_code == 422 and "UF_CRM_" in bad.text
    camel = await client.put(f"/api/accounts/{aid}/payments/settings", json={"date_field": "ufCrm_1721244707107"})
    assert camel.status_code == 422
    ok = await client.put(f"/api/accounts/{aid}/payments/settings", json={"date_field": "UF_CRM_1721244707107"})
    assert ok.status_code == 200
    assert (await client.get("/api/accounts/99999/payments/settings")).status_code == 404


# --- amoCRM ---------------------------------------------------------------------------------------------


def test_amocrm_webhook_custom_fields_are_parsed() -> None:
    [deal] = parse(form_body("lead_update_payment").encode(), region="RU", received_at=datetime.now(UTC))
    # The date field's bare [values][0] (unix seconds: an int, as API v4 gives it) and the others'
    # [values][0][value], as strings.
    assert deal.custom_fields == {"512345": "yandex", "700101": 1764882000, "700102": "45 000,50", "700103": "1"}
    # A lead without custom_fields (a status post) does not say: the mirror keeps what it has.
    [plain] = parse(form_body("lead_update").encode(), region="RU", received_at=datetime.now(UTC))
    assert plain.custom_fields is None


async def test_amocrm_webhooks_keep_only_the_configured_fields(client, rt):
    acc = await create_account(client)
    aid = acc["id"]
    await client.put(f"/api/accounts/{aid}/payments/settings", json=AMO_FIELDS)
    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_update_payment"), headers=FORM)
    assert resp.status_code == 200
    await worker.drain(rt)
    deal = await _deal(rt, aid, "31000001")
    set_at = "2025-12-05T02:00:00+00:00"  # last_modified 1764900000
    assert deal.custom_fields == {
        "700101": {"value": 1764882000, "set_at": set_at},
        "700102": {"value": "45 000,50", "set_at": set_at},
        "700103": {"value": "1", "set_at": set_at},
    }  # utm_source (512345) is not kept
    # A later change that clears "paid" and keeps the rest: the date keeps its set_at.
    later = form_body(
        "lead_update_payment",
        **{
            "leads[update][0][last_modified]": "1764903600",
            "leads[update][0][custom_fields][3][values][0][value]": "",
            "leads[update][0][custom_fields][2][values][0][value]": "46000",
        },
    )
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=later, headers=FORM)).status_code == 200
    await worker.drain(rt)
    deal = await _deal(rt, aid, "31000001")
    assert deal.custom_fields == {
        "700101": {"value": 1764882000, "set_at": set_at},
        "700102": {"value": "46000", "set_at": "2025-12-05T03:00:00+00:00"},
    }
    # A post without custom fields says nothing about them.
    plain = form_body("lead_update", **{"leads[update][0][last_modified]": "1764907200"})
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=plain, headers=FORM)).status_code == 200
    await worker.drain(rt)
    assert (await _deal(rt, aid, "31000001")).custom_fields == deal.custom_fields


async def test_an_account_without_payment_fields_keeps_no_custom_fields(client, rt):
    acc = await create_account(client)
    await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_update_payment"), headers=FORM)
    await worker.drain(rt)
    assert (await _deal(rt, acc["id"], "31000001")).custom_fields is None


async def test_amocrm_backfill_reads_custom_fields_values(client, rt, amo):
    seed_demo(amo, now=NOW)
    lead_id = next(iter(amo.leads))
    amo.leads[lead_id]["custom_fields"] = {"700101": 1764882000, "700103": True, "512345": "yandex"}
    acc = await create_account(client, paused=True)
    aid = acc["id"]
    await client.put(f"/api/accounts/{aid}/payments/settings", json=AMO_FIELDS)
    assert await sync.run_pending(rt) == 1
    deal = await _deal(rt, aid, str(lead_id))
    assert {k: v["value"] for k, v in deal.custom_fields.items()} == {"700101": 1764882000, "700103": True}
    others = [d for d in (await _all_deals(rt, aid)) if d.id != str(lead_id)]
    assert others and all(d.custom_fields is None for d in others)


async def test_a_webhook_after_the_backfill_does_not_restamp_unchanged_values(client, rt, amo):
    # API v4 (the backfill) sends the date as an int and the checkbox as true; the webhook sends the
    # date bare ("1764882000", read as an int) and the checkbox as "1". Same values: "paid" keeps the
    # backfill's set_at, so a deal paid long ago is not "received today" because it was edited today.
    seed_demo(amo, now=NOW)
    lead_id = next(iter(amo.leads))
    amo.leads[lead_id]["custom_fields"] = {"700101": 1764882000, "700103": True}
    acc = await create_account(client, paused=True)
    aid = acc["id"]
    await client.put(f"/api/accounts/{aid}/payments/settings", json=AMO_FIELDS)
    assert await sync.run_pending(rt) == 1
    before = (await _deal(rt, aid, str(lead_id))).custom_fields
    edited = form_body(
        "lead_update_payment",
        **{"leads[update][0][id]": str(lead_id), "leads[update][0][last_modified]": str(int(NOW) + 3600)},
    )
    await client.patch(f"/api/accounts/{aid}", json={"paused": False})
    assert (await client.post(f"/hooks/amocrm/{acc['key']}", content=edited, headers=FORM)).status_code == 200
    await worker.drain(rt)
    after = (await _deal(rt, aid, str(lead_id))).custom_fields
    assert after["700101"] == before["700101"] and after["700103"] == before["700103"]
    assert after["700102"]["value"] == "45 000,50"  # new: stamped with the webhook's time
    assert after["700102"]["set_at"] > before["700103"]["set_at"]


def test_same_value_ignores_only_the_spelling() -> None:
    assert same_value(True, "1") and same_value(False, "0") and same_value(1764882000, "1764882000")
    assert same_value(46000.0, "46000") and same_value(" 5 ", "5")
    assert not same_value(True, "0") and not same_value(1764882000, 1764968400) and not same_value("1", "")


async def _all_deals(rt, aid: int) -> list[Deal]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(Deal).where(Deal.account_id == aid)))


# --- Bitrix24 -------------------------------------------------------------------------------------------


def test_bitrix24_item_user_fields_by_original_name() -> None:
    item = json.loads((FIXTURES / "bitrix24" / "crm_item_get_deal_uf.json").read_text())["result"]["item"]
    [deal, _] = mapping.deal(item)
    # Empty ones left out, a multiple field's first value, a file (an object) left out.
    assert deal.custom_fields == {
        "UF_CRM_1721244707107": "2025-12-05T00:00:00+03:00",
        "UF_CRM_1721244707200": "140000|RUB",
        "UF_CRM_PAID": "N",
        "UF_CRM_TAGS": "опт",
    }
    # crm.item's default camelCase names map back to the original ones.
    assert mapping.uf_name("ufCrm_1721244707107") == "UF_CRM_1721244707107"
    assert mapping.uf_name("ufCrmPaidOn") == "UF_CRM_PAID_ON"
    assert mapping.uf_name("ufCrm_12_360_VIEW_URL") == "UF_CRM_12_360_VIEW_URL"
    assert mapping.uf_name("opportunity") is None
    # No user field in the answer (a select that named none): not said.
    plain = json.loads((FIXTURES / "bitrix24" / "crm_item_get_deal.json").read_text())["result"]["item"]
    assert mapping.deal(plain)[0].custom_fields is None


async def test_bitrix24_event_and_backfill_keep_the_configured_user_fields(client, rt, b24):
    seed_b24(b24)
    b24.deals[4521].update(UF_CRM_1721244707107="2025-12-05T00:00:00+03:00", UF_CRM_NOTE="не нужно")
    b24.deals[4522].update(UF_CRM_1721244707107="2025-12-09T00:00:00+03:00")
    acc = await create_b24_account(client)
    aid = acc["id"]
    fields = {"date_field": "UF_CRM_1721244707107", "paid_field": "UF_CRM_PAID"}
    assert (await client.put(f"/api/accounts/{aid}/payments/settings", json=fields)).status_code == 200
    # The backfill names the fields in crm.item.list's select, with their original names.
    b24.request_log.clear()
    assert await sync.run_pending(rt) == 1
    assert (await _deal(rt, aid, "4522")).custom_fields["UF_CRM_1721244707107"]["value"] == "2025-12-09T00:00:00+03:00"
    assert list((await _deal(rt, aid, "4521")).custom_fields) == ["UF_CRM_1721244707107"]
    # An event: crm.item.get (every field) through batch; the flag set, the note still not kept.
    changed = datetime.fromtimestamp(NOW + 60, UTC).replace(microsecond=0)
    b24.deals[4521].update(UF_CRM_PAID="Y", updatedTime=changed.isoformat())
    resp = await client.post(f"/hooks/bitrix24/{acc['key']}", content=b24_form("ONCRMDEALUPDATE"), headers=B24_FORM)
    assert resp.status_code == 200
    await worker.drain(rt)
    kept = (await _deal(rt, aid, "4521")).custom_fields
    assert set(kept) == {"UF_CRM_1721244707107", "UF_CRM_PAID"}
    assert kept["UF_CRM_PAID"] == {"value": "Y", "set_at": changed.isoformat()}
