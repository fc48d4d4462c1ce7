"""Delivery keeps within amoCRM's 7 requests per second per account, measured at the emulator.

amoCRM counts requests in a rolling second: any eight consecutive arrivals must span at least a
second. The emulator enforces the same limit and answers 429 past it.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from app.outbox import delivery
from tests.app.outbox.outbox_support import (
    T0,
    add_deals,
    crm_notes,
    crm_tasks,
    evaluate,
    new_account,
    outbox,
    rules_doc,
)

RATE = 7


@pytest.mark.parametrize("amo_rate_limit", [RATE])  # the emulator answers 429 past 7 requests/s
async def test_delivery_stays_under_seven_requests_per_second(rt, amo):
    rt.settings.amocrm_rate_per_second = RATE  # before the account's first client (and limiter) is made
    aid = await new_account(
        rt,
        amo=amo,
        rules=rules_doc(
            "deal_without_task", notify={"escalate_after_hours": None, "repeat_hours": None}, flood_limit=10_000
        ),
    )
    await add_deals(rt, aid, range(33000001, 33000351), amo=amo)
    await evaluate(rt, aid, T0)
    assert len(await outbox(rt, status="pending")) == 700  # 7 batches of tasks and 7 of notes

    arrivals: list[float] = []
    admit = amo.admit

    def timed_admit(token: str, limit: int | None) -> bool:
        arrivals.append(time.monotonic())
        return admit(token, limit)

    amo.admit = timed_admit
    stop = asyncio.Event()
    started = time.monotonic()
    worker = asyncio.create_task(delivery.run_forever(rt, stop, poll_seconds=0.05))
    try:
        while await outbox(rt, status="pending") or await outbox(rt, status="sending"):
            assert time.monotonic() - started < 20, "delivery did not finish"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        rt.outbox_wakeup.set()
        await asyncio.wait_for(worker, 10)

    assert amo.rejected_429 == 0
    assert len(crm_tasks(amo)) == 350 and len(crm_notes(amo)) == 350
    requests = len(arrivals)
    assert requests == 14 == len(amo.request_log)
    # No rolling second ever held more than seven requests...
    assert all(arrivals[i + RATE] - arrivals[i] >= 1.0 for i in range(requests - RATE))
    # ...so n requests need at least ceil(n / 7) - 1 seconds, and the average over the span
    # (counted in whole windows) stays within the limit.
    span = arrivals[-1] - arrivals[0]
    assert span >= math.ceil(requests / RATE) - 1
    assert requests / (span + 1.0) <= RATE
