"""The admin API as a new user first calls it by hand: partial rule changes, repeated clicks, a
body sent without its Content-Type."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from app.findings.models import Finding, FindingEvent
from app.merge_patch import merge_patch
from app.sync import service as sync
from integrations.amocrm.demo_data import seed_demo
from tests.conftest import create_account

NOW = int(time.time())
MERGE = {"Content-Type": "application/merge-patch+json"}


async def synced_account(client, rt, amo) -> dict:
    seed_demo(amo, now=NOW)
    acc = await create_account(client)
    await sync.run_pending(rt)
    return acc


def test_merge_patch_follows_rfc_7396_appendix_a():
    # The examples of RFC 7396, Appendix A.
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, result in cases:
        assert merge_patch(target, patch) == result, (target, patch)


async def test_patch_changes_only_what_it_names(client, rt, amo):
    acc = await synced_account(client, rt, amo)
    url = f"/api/accounts/{acc['id']}/rules"
    base = await client.patch(
        url,
        json={
            "calendar": {"work_start": "10:00:00"},
            "rules": {"deal_without_task": {"settings": {"grace_minutes": 45}}},
        },
    )
    assert base.status_code == 200, base.text  # plain application/json is accepted too
    # The README's example, as a merge patch: working hours and grace periods stay as they were.
    patched = await client.patch(
        url,
        headers=MERGE,
        content=b'{"rules": {"stuck_stage": {"settings": '
        b'{"limit_days": 5}, "stages": {"4100000/41000003": {"limit_days": 2}}}}}',
    )
    assert patched.status_code == 200, patched.text
    doc = (await client.get(url)).json()
    assert doc["calendar"]["work_start"] == "10:00:00"
    assert doc["rules"]["deal_without_task"]["settings"]["grace_minutes"] == 45
    assert doc["rules"]["stuck_stage"]["settings"] == {"limit_days": 5.0}
    assert doc["rules"]["stuck_stage"]["stages"] == {"4100000/41000003": {"limit_days": 2}}
    assert patched.json()["warnings"] == []
    # null takes a value back to its default.
    reset = await client.patch(url, headers=MERGE, json={"calendar": {"work_start": None}})
    assert reset.json()["calendar"]["work_start"] == "09:00:00"
    # An invalid result is refused whole, and nothing changes.
    bad = await client.patch(
        url,
        headers=MERGE,
        json={"rules": {"stuck_stage": {"settings": {"limit_days": -1}}}, "calendar": {"work_start": "08:00:00"}},
    )
    assert bad.status_code == 422 and "limit_days" in bad.text
    after = (await client.get(url)).json()
    assert after["calendar"]["work_start"] == "09:00:00"
    assert after["rules"]["stuck_stage"]["settings"]["limit_days"] == 5


async def test_put_replaces_the_whole_document(client, rt, amo):
    acc = await synced_account(client, rt, amo)
    url = f"/api/accounts/{acc['id']}/rules"
    await client.patch(url, json={"calendar": {"work_start": "10:00:00"}})
    put = await client.put(url, json={"rules": {"stuck_stage": {"settings": {"limit_days": 5}}}})
    assert put.status_code == 200
    assert put.json()["calendar"]["work_start"] == "09:00:00"  # left out, so back to its default
    # What GET (or PUT) answers can be sent back as it is.
    assert (await client.put(url, json=put.json())).status_code == 200
    schema = (await client.get("/openapi.json")).json()["paths"]["/api/accounts/{account_id}/rules"]
    assert "Replaces the whole document" in schema["put"]["description"]
    assert "application/merge-patch+json" in schema["patch"]["requestBody"]["content"]


async def test_unknown_pipelines_and_stages_are_kept_with_a_warning(client, rt, amo):
    acc = await synced_account(client, rt, amo)
    url = f"/api/accounts/{acc['id']}/rules"
    resp = await client.patch(
        url,
        headers=MERGE,
        json={
            "rules": {
                "stuck_stage": {
                    "pipelines": {"4100000": {"limit_days": 4}, "999": {"limit_days": 1}},
                    "stages": {"4100000/41000003": {"limit_days": 2}, "4100000/123": {"limit_days": 2}},
                    "exclude": {"pipelines": ["777"]},
                }
            }
        },
    )
    assert resp.status_code == 200
    warnings = resp.json()["warnings"]
    assert len(warnings) == 3
    assert any("rules.stuck_stage.pipelines" in w and "'999'" in w for w in warnings)
    assert any("rules.stuck_stage.stages" in w and "'4100000/123'" in w for w in warnings)
    assert any("exclude.pipelines" in w and "'777'" in w for w in warnings)
    assert "999" in (await client.get(url)).json()["rules"]["stuck_stage"]["pipelines"]


async def test_a_body_without_its_content_type_is_told_to_be_json(client, rt, amo):
    acc = await synced_account(client, rt, amo)
    url = f"/api/accounts/{acc['id']}/rules"
    before = (await client.get(url)).json()
    for method in ("PUT", "PATCH"):
        # What `curl -d '{...}'` sends without -H 'Content-Type: application/json'.
        resp = await client.request(
            method,
            url,
            content=b'{"calendar": {"work_start": "07:00:00"}}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 415
        assert resp.json()["detail"] == "a JSON body is expected: send it with Content-Type: application/json"
    assert (await client.get(url)).json() == before
    created = await client.post("/api/accounts", content=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    assert created.status_code == 415


async def test_acknowledge_and_snooze_are_idempotent(client, rt, amo):
    acc = await synced_account(client, rt, amo)
    items = (await client.get(f"/api/accounts/{acc['id']}/findings", params={"rule": "stuck_stage"})).json()["items"]
    a, b = items[0]["id"], items[1]["id"]
    first = await client.post(f"/api/findings/{a}/ack", json={"by": "8100001"})
    second = await client.post(f"/api/findings/{a}/ack", json={"by": "8100001"})
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()

    until = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    once = await client.post(f"/api/findings/{b}/snooze", json={"until": until.isoformat()})
    twice = await client.post(f"/api/findings/{b}/snooze", json={"until": until.astimezone().isoformat()})
    assert once.status_code == twice.status_code == 200 and twice.json() == once.json()
    async with rt.reads() as s:
        events = await s.scalar(
            select(func.count())
            .select_from(FindingEvent)
            .where(
                FindingEvent.finding_id.in_([a, b]),
                FindingEvent.to_status != "open",
                FindingEvent.to_status != "pending",
            )
        )
    assert events == 2  # one acknowledgement, one snooze: the repeats recorded nothing

    # A different time is a new snooze.
    later = await client.post(f"/api/findings/{b}/snooze", json={"until": (until + timedelta(hours=1)).isoformat()})
    assert later.status_code == 200 and later.json()["snoozed_until"] != once.json()["snoozed_until"]

    # What cannot be done is said in proper English.
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Finding).where(Finding.id == a).values(status="resolved"))
    refused = await client.post(f"/api/findings/{a}/ack")
    assert refused.status_code == 409 and refused.json()["detail"] == "a resolved finding cannot be acknowledged"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    opened = items[2]["id"]
    late = await client.post(f"/api/findings/{opened}/snooze", json={"until": past})
    assert late.json()["detail"] == "a finding can only be snoozed until a moment in the future"
