"""The Bitrix24 client at the wire (respx): URLs of both auth modes, batch, paging, export,
the leaky bucket, 503 QUERY_LIMIT_EXCEEDED and 429 OPERATION_TIME_LIMIT."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.base import (
    CompanyDeleted,
    CompanyUpserted,
    CrmAmbiguous,
    CrmAuthError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    DealUpserted,
    NewNote,
    RecordNamed,
    StageEntered,
    StageKind,
    TaskUpserted,
)
from integrations.bitrix24.client import MethodPaused
from integrations.bitrix24.crm import DEAL_SELECT, TASK_SELECT, Bitrix24Crm
from integrations.bitrix24.limits import PortalLimiter
from integrations.bitrix24.wire import php_query
from integrations.http import within

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bitrix24"
PORTAL = "https://demoshop.bitrix24.ru"
HOOK = f"{PORTAL}/rest/1/abc123secret"


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Tokens:
    def __init__(self, token: str = "webhook:1/abc123secret", refreshed: str | None = None) -> None:
        self.token, self.refreshed, self.refresh_calls = token, refreshed, 0

    async def access_token(self) -> str:
        return self.token

    async def refresh_after_401(self, rejected: str) -> str | None:
        self.refresh_calls += 1
        if self.refreshed is not None:
            self.token = self.refreshed
        return self.refreshed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client(tokens: Tokens | None = None, limiter: PortalLimiter | None = None, **kw: Any) -> Bitrix24Crm:
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    c = Bitrix24Crm(
        PORTAL,
        tokens or Tokens(),
        limiter or PortalLimiter(1000, 1000),
        backoff_base=0.01,
        backoff_cap=0.02,
        sleep=kw.pop("sleep", no_sleep),
        **kw,
    )
    c.slept = slept  # type: ignore[attr-defined]
    return c


def body_of(call: Any) -> dict[str, Any]:
    return json.loads(call.request.content)


@respx.mock
async def test_webhook_mode_puts_the_secret_in_the_path_and_oauth_mode_sends_auth():
    hook = respx.post(f"{HOOK}/profile.json").respond(json={"result": {"ID": "1"}})
    app = respx.post(f"{PORTAL}/rest/profile.json").respond(json={"result": {"ID": "1"}})
    await client().identity()
    await client(Tokens("oauth-token-1")).identity()
    assert hook.call_count == 1 and "auth" not in body_of(hook.calls[0])
    assert body_of(app.calls[0]) == {"auth": "oauth-token-1"}


def test_php_query_encodes_nested_filters_as_batch_commands_carry_them():
    assert php_query({"entityTypeId": 2, "filter": {">ID": 5, "STAGE_ID": ["A", "B"]}, "flag": True}) == (
        "entityTypeId=2&filter[%3EID]=5&filter[STAGE_ID][0]=A&filter[STAGE_ID][1]=B&flag=Y"
    )


@respx.mock
async def test_fetch_named_reads_records_in_one_batch_and_maps_them():
    route = respx.post(f"{HOOK}/batch.json").respond(json=fixture_json("batch_response.json"))
    events = await client().fetch_named([RecordNamed("deal", "4521"), RecordNamed("task", "881")], region="RU")
    sent = body_of(route.calls[0])
    assert sent["halt"] == 0
    assert sent["cmd"] == {
        "deal_4521": "crm.item.get?entityTypeId=2&id=4521&useOriginalUfNames=Y",
        "task_881": "tasks.task.get?taskId=881&" + php_query({"select": TASK_SELECT}),
    }
    deal = next(e for e in events if isinstance(e, DealUpserted))
    task = next(e for e in events if isinstance(e, TaskUpserted))
    assert (deal.id, deal.stage_id, deal.responsible_user_id) == ("4521", "PREPARATION", "7")
    assert (task.id, task.deal_id, task.type_id, task.is_completed) == ("task:881", "4521", "task", False)
    assert task.due_at.isoformat() == "2025-11-21T15:00:00+00:00"


@respx.mock
async def test_a_deal_record_maps_moved_time_to_its_stage_entry():
    respx.post(f"{HOOK}/batch.json").respond(
        json={"result": {"result": {"deal_4521": fixture_json("crm_item_get_deal.json")["result"]}, "result_error": []}}
    )
    events = await client().fetch_named([RecordNamed("deal", "4521")], region="RU")
    deal, entered = events
    assert isinstance(deal, DealUpserted) and isinstance(entered, StageEntered)
    assert deal.stage_kind is StageKind.OPEN and deal.contact_ids == ("311",) and deal.price == 150000
    assert entered.at.isoformat() == "2025-11-17T09:00:00+00:00" and entered.stage_id == "PREPARATION"


@respx.mock
async def test_a_record_gone_from_the_portal_comes_back_as_its_deletion():
    respx.post(f"{HOOK}/batch.json").respond(
        json={
            "result": {
                "result": [],
                "result_error": {
                    "deal_7": {"error": "NOT_FOUND", "error_description": "Элемент не найден"},
                    "activity_9": {"error": "NOT_FOUND", "error_description": "Not found"},
                },
            }
        }
    )
    events = await client().fetch_named([RecordNamed("deal", "7"), RecordNamed("activity", "9")], region="RU")
    assert [type(e).__name__ for e in events] == ["DealDeleted", "TaskDeleted"]
    assert events[1].id == "act:9"


@respx.mock
async def test_another_error_inside_a_batch_raises_so_the_event_is_retried():
    respx.post(f"{HOOK}/batch.json").respond(
        json={
            "result": {
                "result": [],
                "result_error": {"deal_7": {"error": "ACCESS_DENIED", "error_description": "Access denied"}},
            }
        }
    )
    with pytest.raises(CrmRequestError):
        await client().fetch_named([RecordNamed("deal", "7")], region="RU")


async def test_a_batch_takes_at_most_50_commands():
    with pytest.raises(ValueError):
        await client().batch({f"k{i}": ("profile", {}) for i in range(51)})


@respx.mock
async def test_pages_follow_next_until_it_is_absent():
    route = respx.post(f"{HOOK}/user.get.json").mock(
        side_effect=[
            httpx.Response(200, json={"result": [{"ID": str(i)} for i in range(50)], "next": 50, "total": 60}),
            httpx.Response(200, json={"result": [{"ID": str(i)} for i in range(50, 60)], "total": 60}),
        ]
    )
    pages = [p async for p in client().pages("user.get")]
    assert [len(p) for p in pages] == [50, 10]
    assert [body_of(c)["start"] for c in route.calls] == [0, 50]


@respx.mock
async def test_export_pages_by_id_with_start_minus_one():
    route = respx.post(f"{HOOK}/crm.item.list.json").mock(
        side_effect=[
            httpx.Response(200, json={"result": {"items": [{"id": i} for i in range(1, 51)]}}),
            httpx.Response(200, json={"result": {"items": [{"id": 51}, {"id": 52}]}}),
        ]
    )
    pages = [p async for p in client().export("crm.item.list", {"entityTypeId": 2}, key="items", id_field="id")]
    assert [len(p) for p in pages] == [50, 2]
    first, second = (body_of(c) for c in route.calls)
    assert first["start"] == -1 and first["filter"] == {">id": 0} and first["order"] == {"id": "ASC"}
    assert second["filter"] == {">id": 50}


@respx.mock
async def test_query_limit_backs_off_and_retries():
    route = respx.post(f"{HOOK}/profile.json").mock(
        side_effect=[
            httpx.Response(503, json=fixture_json("error_query_limit.json")),
            httpx.Response(503, json=fixture_json("error_query_limit.json")),
            httpx.Response(200, json={"result": {"ID": "1"}}),
        ]
    )
    limiter = PortalLimiter(1000, 1000)
    c = client(limiter=limiter)
    await c.identity()
    assert route.call_count == 3 and len(c.slept) == 2


@respx.mock
async def test_query_limit_gives_up_after_the_retries():
    respx.post(f"{HOOK}/profile.json").respond(503, json=fixture_json("error_query_limit.json"))
    with pytest.raises(CrmUnavailable):
        await client(max_retries=2).identity()


@respx.mock
async def test_operation_time_limit_pauses_that_method_only():
    clock = Clock()
    limiter = PortalLimiter(1000, 1000, wall=clock, clock=clock)
    blocked = respx.post(f"{HOOK}/crm.item.list.json").respond(
        429,
        json={
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked",
            "time": {"operating_reset_at": clock.now + 300},
        },
    )
    other = respx.post(f"{HOOK}/profile.json").respond(json={"result": {}})
    c = client(limiter=limiter, sleep=clock.sleep)
    with pytest.raises(MethodPaused):
        await c.call("crm.item.list", {"entityTypeId": 2})
    assert blocked.call_count == 1
    # The method stays paused without another request; every other method keeps going.
    with pytest.raises(MethodPaused):
        await c.call("crm.item.list", {"entityTypeId": 2})
    assert blocked.call_count == 1
    await c.identity()
    assert other.call_count == 1
    clock.now += 301
    blocked.respond(json={"result": {"items": []}})
    assert (await c.call("crm.item.list", {"entityTypeId": 2}))["result"] == {"items": []}


@respx.mock
async def test_a_short_operation_pause_is_waited_out():
    clock = Clock()
    limiter = PortalLimiter(1000, 1000, wall=clock, clock=clock)
    route = respx.post(f"{HOOK}/crm.item.list.json").mock(
        side_effect=[
            httpx.Response(429, json={"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": clock.now + 10}}),
            httpx.Response(200, json={"result": {"items": []}}),
        ]
    )
    await client(limiter=limiter, sleep=clock.sleep).call("crm.item.list")
    assert route.call_count == 2 and clock.slept and clock.slept[0] == pytest.approx(10, abs=0.01)


@respx.mock
async def test_an_expired_oauth_token_is_refreshed_once():
    route = respx.post(f"{PORTAL}/rest/profile.json").mock(
        side_effect=[
            httpx.Response(401, json={"error": "expired_token", "error_description": "The access token has expired."}),
            httpx.Response(200, json={"result": {"ID": "1"}}),
        ]
    )
    tokens = Tokens("old", refreshed="new")
    await client(tokens).identity()
    assert tokens.refresh_calls == 1 and body_of(route.calls[1])["auth"] == "new"


@respx.mock
async def test_a_refused_webhook_is_an_auth_error():
    respx.post(f"{HOOK}/profile.json").respond(401, json={"error": "INVALID_CREDENTIALS"})
    with pytest.raises(CrmAuthError):
        await client(Tokens(refreshed=None)).identity()


@respx.mock
async def test_a_write_that_may_have_landed_is_not_resent():
    route = respx.post(f"{HOOK}/batch.json").respond(502)
    with pytest.raises(CrmAmbiguous):
        await client().add_notes([NewNote("1", "4521", "текст #cw1")])
    assert route.call_count == 1


async def test_leaky_bucket_lets_a_burst_through_then_drains_at_the_rate():
    clock = Clock()
    limiter = PortalLimiter(2, 50, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        await limiter.acquire()
    assert clock.slept == []  # the whole burst at once
    start = clock.now
    for _ in range(10):
        await limiter.acquire()
    # Ten more at 2 per second take five seconds.
    assert clock.now - start == pytest.approx(5.0, abs=0.05)


async def test_enterprise_bucket_is_5_per_second_with_250():
    clock = Clock()
    limiter = PortalLimiter(5, 250, clock=clock, sleep=clock.sleep)
    for _ in range(250):
        await limiter.acquire()
    assert clock.slept == []
    start = clock.now
    for _ in range(25):
        await limiter.acquire()
    assert clock.now - start == pytest.approx(5.0, abs=0.05)


@respx.mock
async def test_waits_past_the_callers_deadline_end_the_call_instead():
    # QUERY_LIMIT backoff and an OPERATION_TIME_LIMIT pause are rate limits: within a deadline
    # (the outbox's lease) they raise CrmRateLimited rather than wait past it.
    route = respx.post(f"{HOOK}/profile.json").respond(503, json=fixture_json("error_query_limit.json"))
    c = client()  # a retry keeps the request's 20 s timeout in reserve: no room within 10 s
    with within(10), pytest.raises(CrmRateLimited):
        await c.identity()
    assert route.call_count == 1 and c.slept == []

    clock = Clock()
    limiter = PortalLimiter(1000, 1000, wall=clock, clock=clock)
    blocked = respx.post(f"{HOOK}/crm.item.list.json").respond(
        429, json={"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": clock.now + 20}}
    )
    c = client(limiter=limiter, sleep=clock.sleep)
    with within(10), pytest.raises(MethodPaused) as caught:
        await c.call("crm.item.list")
    assert blocked.call_count == 1 and clock.slept == [] and caught.value.retry_after == pytest.approx(20, abs=1)


@respx.mock
async def test_the_backfill_lists_companies_by_id_with_their_names():
    # crm.company.list answers UPPER_CASE fields; paged like the contacts: >ID past the last row, start=-1.
    rows = [
        {"ID": str(i), "TITLE": f"Компания {i}", "ASSIGNED_BY_ID": "7", "DATE_MODIFY": "2025-11-24T19:10:00+03:00"}
        for i in range(1, 51)
    ]
    last = {**rows[0], "ID": "51", "TITLE": "ООО «Ромашка»", "DATE_MODIFY": ""}
    route = respx.post(f"{HOOK}/crm.company.list.json").mock(
        side_effect=[httpx.Response(200, json={"result": rows}), httpx.Response(200, json={"result": [last]})]
    )
    [section] = [s for s in client().backfill(history_days=30, region="RU") if s.name == "companies"]
    pages = [p async for p in section.pages]
    assert [len(p) for p in pages] == [50, 1]
    first, second = (body_of(c) for c in route.calls)
    assert first["start"] == -1 and first["filter"] == {">ID": 0} and first["order"] == {"ID": "ASC"}
    assert {"ID", "TITLE", "ASSIGNED_BY_ID", "DATE_MODIFY"} <= set(first["select"])
    assert second["filter"] == {">ID": 50}
    company = pages[0][0]
    assert isinstance(company, CompanyUpserted)
    assert (company.id, company.name, company.responsible_user_id) == ("1", "Компания 1", "7")
    assert company.updated_at.isoformat() == "2025-11-24T16:10:00+00:00"
    assert pages[1][0].name == "ООО «Ромашка»"


@respx.mock
async def test_a_company_is_read_with_crm_company_get_and_a_gone_one_is_deleted():
    route = respx.post(f"{HOOK}/batch.json").respond(
        json={
            "result": {
                "result": {"company_2917": fixture_json("crm_company_get.json")["result"]},
                # crm.company.get answers a missing company with an empty code and "Not found".
                "result_error": {"company_31": {"error": "", "error_description": "Not found"}},
            }
        }
    )
    events = await client().fetch_named([RecordNamed("company", "2917"), RecordNamed("company", "31")], region="RU")
    assert body_of(route.calls[0])["cmd"] == {
        "company_2917": "crm.company.get?id=2917",
        "company_31": "crm.company.get?id=31",
    }
    assert events == [
        CompanyUpserted(
            id="2917",
            updated_at=datetime(2025, 11, 24, 16, 10, tzinfo=UTC),
            name="ООО «Ромашка»",
            responsible_user_id="8",
        ),
        CompanyDeleted("31"),
    ]


def test_the_backfill_asks_for_the_deals_company():
    # crm.item.list leaves out what `select` does not name: companyId must be named.
    assert "companyId" in DEAL_SELECT
