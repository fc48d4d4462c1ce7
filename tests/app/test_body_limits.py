"""No route buffers an unbounded body (issue 17, defect 4): every route that may read one answers
413 past its limit, whether the body declares its length or comes chunked without one, and
stores nothing. The route table is walked, so a route added later is held to it too."""

from __future__ import annotations

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from app.ingest.models import InboxEvent
from app.settings import Settings
from tests.conftest import create_account, create_b24_account

REQUEST_LIMIT = 4096
WEBHOOK_LIMIT = 16384
READS_NO_BODY = {"GET", "HEAD", "OPTIONS"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_bytes": REQUEST_LIMIT, "max_webhook_bytes": WEBHOOK_LIMIT})


async def _stored(rt) -> int:
    async with rt.sessions() as s:
        return await s.scalar(select(func.count()).select_from(InboxEvent))


def _body_routes(app, acc: dict) -> list[tuple[str, str, int]]:
    """(method, URL, limit) of every route and method that may carry a body."""
    out = []
    for route in iter_route_contexts(app.routes):
        if not route.path or not route.methods:
            continue
        url = (
            route.path.replace("{account_id}", str(acc["id"]))
            .replace("{key}", acc["key"])
            .replace("{event:path}", "summary")
            .replace("{provider}", "generic")
            .replace("{path:path}", "findings")
        )
        url = url.replace("{finding_id}", "1").replace("{action_id}", "1").replace("{link_id}", "1")
        url = url.replace("{secret}", "x").replace("{name}", "x")
        limit = WEBHOOK_LIMIT if url.startswith("/hooks/") else REQUEST_LIMIT
        out.extend((method, url, limit) for method in sorted(route.methods - READS_NO_BODY))
    return out


class Chunks:
    """A chunked body (no Content-Length) that counts how much of it the server pulled."""

    def __init__(self, total: int) -> None:
        self.total, self.pulled = total, 0

    async def __aiter__(self):
        while self.pulled < self.total:
            n = min(1024, self.total - self.pulled)
            self.pulled += n
            yield b"a" * n


def _chunks(total: int) -> Chunks:
    return Chunks(total)


async def test_every_route_that_takes_a_body_refuses_one_past_its_limit(client, app, rt):
    acc = await create_account(client)
    for provider, secrets in (("generic", {"secret": "s" * 16}), ("mango", {"api_key": "k", "api_salt": "s"})):
        resp = await client.put(f"/api/accounts/{acc['id']}/telephony/{provider}", json={**secrets, "extensions": {}})
        assert resp.status_code == 200, resp.text
    b24 = await create_b24_account(client)
    routes = [
        (m, u.replace(acc["key"], b24["key"]) if u.startswith("/hooks/bitrix24/") else u, limit)
        for m, u, limit in _body_routes(app, acc)
    ]
    assert len(routes) >= 30, routes
    assert any(u.startswith("/widget/bitrix24/deal-tab") for _, u, _ in routes)
    too_big = []
    for method, url, limit in routes:
        declared = await client.request(
            method, url, content=b"a" * (limit + 1), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        body = Chunks(limit + 1)
        chunked = await client.request(method, url, content=body, headers={"content-type": "application/json"})
        # Chunked: refused once past the limit, or answered without reading it all (a route that
        # reads no body, or refuses before reading: an unknown key, a missing token).
        if declared.status_code != 413 or (chunked.status_code != 413 and body.pulled > limit):
            too_big.append((method, url, declared.status_code, chunked.status_code, body.pulled))
    assert too_big == [], "\n".join(map(str, too_big))
    assert await _stored(rt) == 0


async def test_a_body_within_the_limit_is_read(client):
    acc = await create_account(client)
    # The deal tab reads a form up to the request limit: just under it, a 400 page (not a Bitrix24 form).
    resp = await client.post(
        "/widget/bitrix24/deal-tab",
        content=b"a=" + b"b" * (REQUEST_LIMIT - 2),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400
    # Webhooks may be larger than the admin API's bodies: a chunked one between the two limits is read.
    resp = await client.post(
        f"/hooks/amocrm/{acc['key']}", content=_chunks(REQUEST_LIMIT * 2), headers={"content-type": "text/plain"}
    )
    assert resp.status_code == 400, resp.text  # read, then refused as no amoCRM form
    resp = await client.post(
        f"/hooks/telephony/generic/{acc['key']}", content=_chunks(REQUEST_LIMIT * 2), headers={"content-type": "x"}
    )
    assert resp.status_code in (401, 404), resp.text


async def test_a_declared_oversized_body_is_refused_before_the_handler_acts(client):
    acc = await create_account(client)
    resp = await client.request("DELETE", f"/api/accounts/{acc['id']}", content=b"a" * (REQUEST_LIMIT + 1))
    assert resp.status_code == 413
    assert (await client.get(f"/api/accounts/{acc['id']}")).status_code == 200
