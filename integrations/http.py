"""HTTP plumbing shared by every outside API client."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from functools import cache
from urllib.parse import urlsplit

import httpx

from integrations.base import CrmStopping


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for the process: building one loads the CA bundle (~30 ms), and clients
    are made per batch of work."""
    return ssl.create_default_context()


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased: what a browser sends as Origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def backoff_delay(attempt: int, base: float, cap: float, jitter: tuple[float, float] = (0.5, 1.0)) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, …): exponential from `base`, capped at
    `cap`, times a random factor within `jitter` so clients do not retry in step. The default is
    "equal jitter" (between half and all of it); (1, 1) is none. Every retry schedule of crmwatch
    is this one: the CRM clients', the inbox worker's and the outbox's."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    low, high = jitter
    return ceiling * (low if low == high else random.uniform(low, high))


class HostRouter(httpx.AsyncBaseTransport):
    """Sends each request to the transport registered for its host (tests and the demo run
    several emulated CRMs behind one Runtime)."""

    def __init__(self, routes: dict[str, httpx.AsyncBaseTransport], default: httpx.AsyncBaseTransport) -> None:
        self.routes = routes
        self.default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.routes.get(request.url.host, self.default)
        return await transport.handle_async_request(request)


# The bounds of every retry wait inside a CRM client, set by whoever runs the work and read by the
# clients, so no signature between them has to carry them. A deadline (monotonic seconds): the
# outbox's claim of a batch ends with its lease, and a wait that would outlive it must end the claim
# instead (another worker would take the rows over and send them too). A stop event: the worker
# process was asked to stop, and a wait for a failing CRM must not hold it up.
_deadline: ContextVar[float | None] = ContextVar("crm_deadline", default=None)
_stop: ContextVar[asyncio.Event | None] = ContextVar("crm_stop", default=None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Every CRM call inside must be over `seconds` from now: a wait that would not fit raises."""
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def stops_on(event: asyncio.Event) -> Iterator[None]:
    """Retry waits inside end with CrmStopping as soon as `event` is set (tasks started inside inherit it)."""
    token = _stop.set(event)
    try:
        yield
    finally:
        _stop.reset(token)


def stopping() -> bool:
    event = _stop.get()
    return event is not None and event.is_set()


def fits(wait: float, then: float = 0.0) -> bool:
    """Whether waiting `wait` seconds and then a request of up to `then` seconds ends before the deadline."""
    at = _deadline.get()
    return at is None or time.monotonic() + wait + then <= at


async def pause(seconds: float, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
    """Waits before a retry; raises CrmStopping when the process is asked to stop meanwhile."""
    event = _stop.get()
    if event is None:
        await sleep(seconds)
        return
    if not event.is_set():
        if sleep is asyncio.sleep:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        else:  # a test's clock
            await sleep(seconds)
    if event.is_set():
        raise CrmStopping("the process is stopping")
