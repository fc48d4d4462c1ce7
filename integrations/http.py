"""HTTP plumbing shared by every outside API client."""

from __future__ import annotations

import random
import ssl
from functools import cache
from urllib.parse import urlsplit

import httpx


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
