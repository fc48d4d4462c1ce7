"""The client against the emulator's enforced limits, on one simulated clock: the leaky bucket
(2/s, burst 50) and a method's operating time (480 s per 10 minutes)."""

from __future__ import annotations

import httpx
import pytest

from integrations.bitrix24.client import MethodPaused
from integrations.bitrix24.crm import Bitrix24Crm
from integrations.bitrix24.emulator import Bitrix24Emulator, create_bitrix24_app
from integrations.bitrix24.limits import PortalLimiter


class SimClock:
    """Monotonic and wall time that only move when someone sleeps."""

    def __init__(self) -> None:
        self.t = 1_764_000_000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)


class WebhookTokens:
    async def access_token(self) -> str:
        return "webhook:1/abc123secret"

    async def refresh_after_401(self, rejected: str) -> str | None:
        return None


def setup(rate: float, burst: int) -> tuple[Bitrix24Emulator, Bitrix24Crm, SimClock]:
    clock = SimClock()
    portal = Bitrix24Emulator()
    portal.clock = portal.unix_now = clock
    limiter = PortalLimiter(rate, burst, clock=clock, wall=clock, sleep=clock.sleep)
    client = Bitrix24Crm(
        "https://demoshop.bitrix24.ru",
        WebhookTokens(),
        limiter,
        backoff_base=0.5,
        backoff_cap=4.0,
        sleep=clock.sleep,
        transport=httpx.ASGITransport(create_bitrix24_app(portal)),
    )
    return portal, client, clock


async def test_a_client_keeping_the_portals_bucket_is_never_refused():
    portal, client, clock = setup(2, 50)
    start = clock.t
    for _ in range(80):
        await client.call("profile")
    await client.aclose()
    assert portal.refused_503 == 0
    # 50 at once, then 30 more at 2 per second.
    assert clock.t - start == pytest.approx(15.0, abs=0.1)


async def test_a_client_that_ignores_the_bucket_is_refused_but_loses_nothing():
    portal, client, _clock = setup(1000, 1000)
    for _ in range(80):
        await client.call("profile")
    await client.aclose()
    assert portal.refused_503 > 0  # the portal said QUERY_LIMIT_EXCEEDED, and the client backed off
    assert sum(1 for m, _ in portal.calls if m == "profile") == 80 + portal.refused_503


async def test_a_batch_of_50_commands_costs_one_request():
    portal, client, _clock = setup(2, 50)
    for i in range(50):
        portal.add_user(i + 1, f"User {i}")
    for _ in range(10):
        await client.batch({f"u{i}": ("user.get", {"ID": i}) for i in range(50)})
    await client.aclose()
    assert len(portal.calls) == 10 and portal.refused_503 == 0 and portal.level == pytest.approx(10, abs=0.1)


async def test_a_method_over_its_operating_time_is_paused_and_others_go_on():
    portal, client, clock = setup(2, 50)
    portal.operating_cost["crm.item.list"] = 100.0  # each call "runs" 100 s on the portal
    for _ in range(4):
        await client.call("crm.item.list", {"entityTypeId": 2})
    with pytest.raises(MethodPaused):
        for _ in range(3):
            await client.call("crm.item.list", {"entityTypeId": 2})
    blocked_calls = sum(1 for m, _ in portal.calls if m == "crm.item.list")
    # Paused here: further calls are not even sent until the reset.
    with pytest.raises(MethodPaused):
        await client.call("crm.item.list", {"entityTypeId": 2})
    assert sum(1 for m, _ in portal.calls if m == "crm.item.list") == blocked_calls
    await client.call("profile")  # every other method keeps working
    await clock.sleep(601)
    await client.call("crm.item.list", {"entityTypeId": 2})
    await client.aclose()
