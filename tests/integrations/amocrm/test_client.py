"""AmoCrmClient against amoCRM's wire behaviour: HAL paging, 204 lists, backoff, 401 refresh, rate limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.amocrm.client import AmoCrmClient
from integrations.base import (
    ContactUpserted,
    CrmAuthError,
    CrmRateLimited,
    CrmRequestError,
    CrmStopping,
    CrmUnavailable,
    DealUpserted,
    DomainEvent,
    PipelineUpserted,
    StageEntered,
    StageKind,
    TaskUpserted,
)
from integrations.http import stops_on, within
from integrations.ratelimit import SlidingWindowLimiter

# Copies of ../shared/fixtures/amocrm, kept inside the repository so the suite is self-contained.
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "amocrm"
BASE = "https://demoshop.amocrm.ru"


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class FakeTokens:
    """A TokenSource whose refreshes hand out the given tokens in turn."""

    def __init__(self, token: str = "tok-1", refreshes: list[str | None] | None = None) -> None:
        self.token = token
        self._refreshes = list(refreshes if refreshes is not None else ["tok-2"])
        self.refresh_calls: list[str] = []

    async def access_token(self) -> str:
        return self.token

    async def refresh_after_401(self, rejected: str) -> str | None:
        self.refresh_calls.append(rejected)
        new = self._refreshes.pop(0) if self._refreshes else None
        if new is not None:
            self.token = new
        return new


class VirtualTime:
    """One fake clock for the limiter and the client, so backoff waits cost no real time.

    Client and limiter sleeps are recorded apart: the tests reason about the client's backoff.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.client_sleeps: list[float] = []
        self.limiter_sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def client_sleep(self, seconds: float) -> None:
        self.client_sleeps.append(seconds)
        self.now += seconds

    async def limiter_sleep(self, seconds: float) -> None:
        self.limiter_sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
async def client(vt: VirtualTime, tokens: FakeTokens) -> AsyncIterator[AmoCrmClient]:
    limiter = SlidingWindowLimiter(1000, clock=vt.clock, sleep=vt.limiter_sleep)
    c = AmoCrmClient(BASE, tokens, limiter, max_retries=3, sleep=vt.client_sleep)
    yield c
    await c.aclose()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    # Unmatched requests must fail loudly; routes that must stay untouched are checked by hand.
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


async def collect(client: AmoCrmClient, section: str, region: str = "RU") -> list[list[DomainEvent]]:
    sections = {s.name: s for s in client.backfill(history_days=30, region=region)}
    return [page async for page in sections[section].pages]


# -- paging --------------------------------------------------------------------------------------


async def test_paging_follows_next_link_until_204(client: AmoCrmClient, api: respx.MockRouter) -> None:
    route = api.get(f"{BASE}/api/v4/tasks").mock(
        side_effect=[
            httpx.Response(200, json=fixture_json("api_v4_tasks_page.json")),
            httpx.Response(204),
        ]
    )

    pages = await collect(client, "tasks")

    assert [[ev.id for ev in page] for page in pages] == [["52000001"]]
    assert route.call_count == 2
    first, second = (call.request for call in route.calls)
    assert query(first) == {"filter[is_completed]": "0", "limit": "250", "page": "1"}
    assert query(second)["page"] == "2"
    assert query(second)["limit"] == "250"
    for req in (first, second):
        assert req.headers["Authorization"] == "Bearer tok-1"


async def test_events_section_pages_by_100_and_filters_status_changes(
    client: AmoCrmClient, api: respx.MockRouter
) -> None:
    route = api.get(f"{BASE}/api/v4/events").mock(
        return_value=httpx.Response(200, json=fixture_json("api_v4_events_status.json"))
    )

    before = datetime.now(UTC)
    await collect(client, "stage_events")

    # The fixture has no _links.next: one request only.
    assert route.call_count == 1
    params = query(route.calls[0].request)
    assert params["limit"] == "100"
    assert params["filter[type]"] == "lead_status_changed"
    since = at(int(params["filter[created_at][from]"]))
    assert abs(since - (before - timedelta(days=30))) < timedelta(seconds=5)


async def test_204_on_first_page_is_an_empty_list(client: AmoCrmClient, api: respx.MockRouter) -> None:
    route = api.get(f"{BASE}/api/v4/leads").mock(return_value=httpx.Response(204))

    assert await collect(client, "deals") == []
    assert route.call_count == 1


async def test_next_link_to_another_host_is_not_followed(client: AmoCrmClient, api: respx.MockRouter) -> None:
    page1 = fixture_json("api_v4_tasks_page.json")
    page1["_links"]["next"]["href"] = "https://collector.example.net/api/v4/tasks?page=2"
    foreign = api.route(host="collector.example.net").mock(return_value=httpx.Response(204))
    own = api.get(f"{BASE}/api/v4/tasks").mock(
        side_effect=[
            httpx.Response(200, json=page1),
            httpx.Response(204),
        ]
    )

    await collect(client, "tasks")

    assert not foreign.called
    assert own.call_count == 2
    # The fallback keeps the section's own filters and steps to the next page number.
    assert query(own.calls[1].request) == {"filter[is_completed]": "0", "limit": "250", "page": "2"}


# -- retries -------------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after(client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json={"id": 29876543, "subdomain": "demoshop"}),
        ]
    )

    ident = await client.identity()

    assert ident.external_id == "29876543"
    assert route.call_count == 2
    assert vt.client_sleeps == [3.0]


async def test_429_without_retry_after_backs_off(client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[
            httpx.Response(429),
            httpx.Response(200, json={"id": 29876543}),
        ]
    )

    await client.identity()

    assert route.call_count == 2
    assert len(vt.client_sleeps) == 1
    assert 0.25 <= vt.client_sleeps[0] <= 0.5


async def test_503_is_retried_with_growing_backoff(
    client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime
) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(200, json={"id": 29876543}),
        ]
    )

    ident = await client.identity()

    assert ident.external_id == "29876543"
    assert route.call_count == 3
    first, second = vt.client_sleeps
    # Base 0.5 s doubling, with jitter in the upper half of each ceiling.
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_transport_error_is_retried(client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[
            httpx.ConnectTimeout("connect timed out"),
            httpx.Response(200, json={"id": 29876543}),
        ]
    )

    ident = await client.identity()

    assert ident.external_id == "29876543"
    assert route.call_count == 2
    assert len(vt.client_sleeps) == 1


async def test_retries_exhausted_is_crm_unavailable(
    client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime
) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(return_value=httpx.Response(502))

    with pytest.raises(CrmUnavailable):
        await client.identity()

    # max_retries=3: the first try plus three retries, a wait before each retry.
    assert route.call_count == 4
    assert len(vt.client_sleeps) == 3


# -- auth and request errors ---------------------------------------------------------------------


async def test_401_refreshes_once_and_retries_with_new_token(
    client: AmoCrmClient, api: respx.MockRouter, tokens: FakeTokens
) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[
            httpx.Response(401),
            httpx.Response(200, json={"id": 29876543}),
        ]
    )

    ident = await client.identity()

    assert ident.external_id == "29876543"
    assert tokens.refresh_calls == ["tok-1"]
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer tok-1", "Bearer tok-2"]


async def test_second_401_is_auth_error(client: AmoCrmClient, api: respx.MockRouter, tokens: FakeTokens) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(return_value=httpx.Response(401))

    with pytest.raises(CrmAuthError):
        await client.identity()

    assert tokens.refresh_calls == ["tok-1"]
    assert route.call_count == 2


async def test_401_without_a_fresh_token_is_auth_error(api: respx.MockRouter, vt: VirtualTime) -> None:
    tokens = FakeTokens(refreshes=[None])
    route = api.get(f"{BASE}/api/v4/account").mock(return_value=httpx.Response(401))
    client = AmoCrmClient(
        BASE, tokens, SlidingWindowLimiter(1000, clock=vt.clock, sleep=vt.limiter_sleep), sleep=vt.client_sleep
    )
    try:
        with pytest.raises(CrmAuthError):
            await client.identity()
    finally:
        await client.aclose()

    assert tokens.refresh_calls == ["tok-1"]
    assert route.call_count == 1


async def test_400_is_request_error_without_retry(
    client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime, tokens: FakeTokens
) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        return_value=httpx.Response(400, json={"title": "Bad Request", "detail": "Invalid filter"})
    )

    with pytest.raises(CrmRequestError):
        await client.identity()

    assert route.call_count == 1
    assert vt.client_sleeps == []
    assert tokens.refresh_calls == []


# -- mapping to domain events --------------------------------------------------------------------


async def test_pipelines_map_to_stages_with_won_and_lost(client: AmoCrmClient, api: respx.MockRouter) -> None:
    api.get(f"{BASE}/api/v4/leads/pipelines").mock(
        return_value=httpx.Response(200, json=fixture_json("api_v4_pipelines.json"))
    )

    [[pipeline]] = await collect(client, "pipelines")

    assert isinstance(pipeline, PipelineUpserted)
    assert pipeline.id == "4100000"
    assert pipeline.name == "Воронка"
    assert pipeline.is_archived is False
    kinds = {s.id: s.kind for s in pipeline.stages}
    assert kinds == {
        "41000001": StageKind.OPEN,
        "41000002": StageKind.OPEN,
        "41000003": StageKind.OPEN,
        "41000004": StageKind.OPEN,
        "142": StageKind.WON,
        "143": StageKind.LOST,
    }


async def test_status_events_map_to_stage_entered(client: AmoCrmClient, api: respx.MockRouter) -> None:
    api.get(f"{BASE}/api/v4/events").mock(
        return_value=httpx.Response(200, json=fixture_json("api_v4_events_status.json"))
    )

    [[event]] = await collect(client, "stage_events")

    assert event == StageEntered(
        deal_id="31000001",
        stage_id="41000003",
        pipeline_id="4100000",
        at=at(1764000000),
        from_stage_id="41000002",
        by_user_id="8100001",
    )


async def test_tasks_map_to_task_upserted(client: AmoCrmClient, api: respx.MockRouter) -> None:
    api.get(f"{BASE}/api/v4/tasks").mock(
        side_effect=[
            httpx.Response(200, json=fixture_json("api_v4_tasks_page.json")),
            httpx.Response(204),
        ]
    )

    [[task]] = await collect(client, "tasks")

    assert isinstance(task, TaskUpserted)
    assert task.id == "52000001"
    assert task.deal_id == "31000001"
    assert task.entity_type == "deal"
    assert task.due_at == at(1764086400)
    assert task.is_completed is False
    # amoCRM sends `result: []` for an open task; that is "no result", not a crash.
    assert task.result_text is None
    assert task.text == "Перезвонить, уточнить бюджет"


async def test_contact_phones_are_normalized_to_e164(client: AmoCrmClient, api: respx.MockRouter) -> None:
    body = {
        "_page": 1,
        "_links": {"self": {"href": f"{BASE}/api/v4/contacts?limit=250&page=1"}},
        "_embedded": {
            "contacts": [
                {
                    "id": 33000001,
                    "name": "Анна Кузнецова",
                    "responsible_user_id": 8100001,
                    "updated_at": 1764000000,
                    "custom_fields_values": [
                        {
                            "field_id": 264911,
                            "field_name": "Телефон",
                            "field_code": "PHONE",
                            "field_type": "multitext",
                            "values": [
                                {"value": "8 912 345-67-01", "enum_id": 193200, "enum_code": "WORK"},
                                {"value": "+7 (912) 345-67-02", "enum_id": 193202, "enum_code": "MOB"},
                            ],
                        },
                        {
                            "field_id": 264913,
                            "field_name": "Email",
                            "field_code": "EMAIL",
                            "field_type": "multitext",
                            "values": [{"value": "anna@example.com", "enum_id": 193210, "enum_code": "WORK"}],
                        },
                    ],
                }
            ]
        },
    }
    api.get(f"{BASE}/api/v4/contacts").mock(return_value=httpx.Response(200, json=body))

    [[contact]] = await collect(client, "contacts")

    assert isinstance(contact, ContactUpserted)
    assert contact.id == "33000001"
    assert contact.phones == ("+79123456701", "+79123456702")
    assert contact.updated_at == at(1764000000)


async def test_fetch_deals_asks_for_each_id_with_contacts(client: AmoCrmClient, api: respx.MockRouter) -> None:
    body = {
        "_embedded": {
            "leads": [
                {
                    "id": 1,
                    "name": "Заказ #1",
                    "price": 15000,
                    "responsible_user_id": 8100001,
                    "status_id": 142,
                    "pipeline_id": 4100000,
                    "updated_at": 1764000000,
                    "closed_at": 1764000000,
                    "_embedded": {"contacts": [{"id": 33000001, "is_main": True}]},
                },
                {
                    "id": 2,
                    "name": "Заказ #2",
                    "price": None,
                    "responsible_user_id": 8100002,
                    "status_id": 41000002,
                    "pipeline_id": 4100000,
                    "updated_at": 1764000000,
                    "_embedded": {"contacts": []},
                },
            ]
        }
    }
    route = api.get(f"{BASE}/api/v4/leads").mock(return_value=httpx.Response(200, json=body))

    deals = await client.fetch_deals(["1", "2"], region="RU")

    params = route.calls[0].request.url.params
    assert params.get_list("filter[id][]") == ["1", "2"]
    assert params["with"] == "contacts"
    assert all(isinstance(d, DealUpserted) for d in deals)
    assert [(d.id, d.stage_kind, d.contact_ids) for d in deals] == [
        ("1", StageKind.WON, ("33000001",)),
        ("2", StageKind.OPEN, ()),
    ]


# -- rate limit ----------------------------------------------------------------------------------


async def test_rate_limit_holds_at_most_7_calls_per_rolling_second(api: respx.MockRouter) -> None:
    stamps: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return httpx.Response(200, json={"id": 29876543})

    api.get(f"{BASE}/api/v4/account").mock(side_effect=record)
    client = AmoCrmClient(BASE, FakeTokens(), SlidingWindowLimiter(7))
    try:
        await asyncio.gather(*(client.identity() for _ in range(15)))
    finally:
        await client.aclose()

    assert len(stamps) == 15
    stamps.sort()
    for i, start in enumerate(stamps):
        in_window = sum(1 for t in stamps[i:] if t - start < 1.0)
        assert in_window <= 7, f"{in_window} calls within 1 s starting at call {i}"


async def test_a_retry_after_past_the_callers_deadline_ends_the_call_at_once(
    client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime
) -> None:
    # The outbox gives its lease as the deadline: waiting out an hour inside it would let another
    # worker take the rows over and send them too.
    route = api.post(f"{BASE}/api/v4/tasks").respond(429, headers={"Retry-After": "3600"})
    with within(60), pytest.raises(CrmRateLimited) as caught:
        await client.request("POST", "/api/v4/tasks", json=[{"text": "x"}], idempotent=False)
    assert route.call_count == 1 and vt.client_sleeps == [] and caught.value.retry_after == 3600
    # A limiter held back by that 429 does not let the next call queue past its deadline either.
    with within(60), pytest.raises(CrmRateLimited):
        await client.request("GET", "/api/v4/account")
    assert route.call_count == 1


async def test_a_backoff_past_the_deadline_is_an_outage_and_short_waits_still_retry(
    client: AmoCrmClient, api: respx.MockRouter, vt: VirtualTime
) -> None:
    route = api.get(f"{BASE}/api/v4/account").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"id": 1})]
    )
    with within(60):
        assert (await client.identity()).external_id == "1"
    assert route.call_count == 2 and vt.client_sleeps == [3.0]
    route.mock(side_effect=None, return_value=httpx.Response(503))
    with within(0.5), pytest.raises(CrmUnavailable) as caught:
        await client.identity()
    assert not isinstance(caught.value, CrmRateLimited) and route.call_count == 3


async def test_a_stop_request_cuts_a_retry_wait_short(api: respx.MockRouter, tokens: FakeTokens) -> None:
    # Real sleeps: a 503 storm with an hour of backoff must not hold a stopping worker.
    client = AmoCrmClient(BASE, tokens, SlidingWindowLimiter(1000), backoff_base=3600, backoff_cap=3600)
    sent = asyncio.Event()

    def unavailable(request: httpx.Request) -> httpx.Response:
        sent.set()
        return httpx.Response(503)

    route = api.get(f"{BASE}/api/v4/account").mock(side_effect=unavailable)
    stop = asyncio.Event()
    with stops_on(stop):
        call = asyncio.create_task(client.identity())
        await asyncio.wait_for(sent.wait(), 5)
        started = time.monotonic()
        stop.set()
        with pytest.raises(CrmStopping):
            await asyncio.wait_for(call, 5)
    assert time.monotonic() - started < 1 and route.call_count == 1
    await client.aclose()
