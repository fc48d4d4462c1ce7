"""Bitrix24's request limits as the client sees them, one object per portal.

Bitrix24 counts requests per portal in a leaky bucket: each request adds one, the counter
drains at `rate` per second, and above `burst` requests are refused with
503 QUERY_LIMIT_EXCEEDED (2/s and 50 on most plans, 5/s and 250 on Enterprise). Keeping our
own copy of the bucket means a burst of work goes out at once and a long one slows to the
drain rate, instead of learning the limit from refusals.

Separately, a method whose summed execution time passes 480 s in 10 minutes is blocked for
the whole portal (429 OPERATION_TIME_LIMIT) until its `operating_reset_at`; only that method
is paused here, every other one keeps going.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from integrations.base import CrmRateLimited
from integrations.http import fits, pause


class PortalLimiter:
    def __init__(
        self,
        rate: float = 2.0,
        burst: int = 50,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = pause,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._level = 0.0
        self._stamp = clock()
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._lock = asyncio.Lock()
        # method → wall-clock unix time when Bitrix24 lets it run again
        self._paused: dict[str, float] = {}

    def _drain(self) -> float:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._stamp) * self.rate)
        self._stamp = now
        return now

    async def acquire(self, reserve: float = 0.0) -> None:
        """Waits for room in the bucket. Raises CrmRateLimited rather than wait past the caller's
        deadline (integrations.http.within), keeping `reserve` seconds of it for the request itself."""
        async with self._lock:
            while True:
                self._drain()
                if self._level + 1 <= self.burst:
                    self._level += 1
                    return
                wait = (self._level + 1 - self.burst) / self.rate + 0.001
                if not fits(wait, reserve):
                    raise CrmRateLimited(
                        f"the portal's request limit holds requests for {wait:.1f} s", retry_after=wait
                    )
                await self._sleep(wait)

    def delay(self) -> float:
        """Seconds until a request could go (0: now), so a caller with a deadline can decline to queue."""
        self._drain()
        return max(0.0, (self._level + 1 - self.burst) / self.rate)

    def penalize(self, seconds: float | None = None) -> None:
        """After a 503 QUERY_LIMIT_EXCEEDED our count was behind the portal's (another app on the
        same IP, or a restart): treat the bucket as full, plus `seconds` of extra drain."""
        self._drain()
        self._level = self.burst + (seconds or 0.0) * self.rate

    @property
    def level(self) -> float:
        self._drain()
        return self._level

    def pause_method(self, method: str, until_unix: float) -> None:
        self._paused[method.lower()] = max(until_unix, self._paused.get(method.lower(), 0.0))

    def paused_for(self, method: str) -> float:
        """Seconds until `method` may run again (0 when it is not paused)."""
        until = self._paused.get(method.lower())
        if until is None:
            return 0.0
        left = until - self._wall()
        if left <= 0:
            self._paused.pop(method.lower(), None)
            return 0.0
        return left
