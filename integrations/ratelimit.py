"""Client-side rate limiting shared by every outside API we call."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from integrations.base import CrmRateLimited
from integrations.http import fits, pause


class SlidingWindowLimiter:
    """At most `rate` calls in any rolling window of `window` seconds.

    A plain 1/rate spacing would still let rate+1 calls land inside one second at the
    window's edges; a vendor counting per rolling second (amoCRM does) would answer 429.
    `margin` widens the window a little: a call sent at t can reach the vendor after one
    sent at t + δ, and the vendor counts arrivals, not departures.
    """

    def __init__(
        self,
        rate: float,
        window: float = 1.0,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = pause,
    ) -> None:
        self.capacity = max(1, int(rate * window)) if rate >= 1 else 1
        self.window = (window if rate >= 1 else 1.0 / rate) + margin
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, reserve: float = 0.0) -> None:
        """Waits for a slot. Raises CrmRateLimited rather than wait past the caller's deadline
        (integrations.http.within), keeping `reserve` seconds of it for the request itself."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.window:
                    self._stamps.popleft()
                if len(self._stamps) < self.capacity:
                    self._stamps.append(now)
                    return
                wait = self.window - (now - self._stamps[0]) + 0.001
                if not fits(wait, reserve):
                    raise CrmRateLimited(f"the rate limit holds requests for {wait:.1f} s", retry_after=wait)
                await self._sleep(wait)

    def penalize(self, seconds: float) -> None:
        """After a 429, hold every caller back: fill the window as if it were just used up."""
        now = self._clock() + seconds - self.window
        self._stamps = deque([now] * self.capacity)


class LimiterRegistry:
    """One limiter per (vendor, account) in this process, so every client of an account shares it."""

    def __init__(self) -> None:
        self._limiters: dict[tuple[str, object], SlidingWindowLimiter] = {}

    def get(
        self, vendor: str, account: object, rate: float | None = None, factory: Callable[[], Any] | None = None
    ) -> Any:
        """The account's limiter, made by `factory` (a vendor's own kind) or as a sliding window of `rate`."""
        key = (vendor, account)
        limiter = self._limiters.get(key)
        if limiter is None:
            if factory is None and rate is None:
                raise ValueError("give a rate or a factory")
            limiter = self._limiters[key] = factory() if factory is not None else SlidingWindowLimiter(rate or 1.0)
        return limiter
