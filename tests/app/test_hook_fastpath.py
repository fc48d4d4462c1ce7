"""The webhook fast path (app/ingest/fastpath.py) behaves like the FastAPI route it shortcuts:
the same answers, request ids, metrics and crash handling."""

from __future__ import annotations

from sqlalchemy import func, select

from app.ingest.models import InboxEvent
from tests.conftest import FORM, create_account, form_body


async def _rows(rt) -> int:
    async with rt.sessions() as s:
        return await s.scalar(select(func.count()).select_from(InboxEvent))


SERIES = 'crmwatch_http_request_seconds_count{route="/hooks/amocrm/{key}",status="200"} '


async def _hook_count(client) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(SERIES):
            return float(line.removeprefix(SERIES))
    return 0.0


async def test_a_webhook_answer_carries_the_request_id_and_is_measured_under_its_route(client):
    acc = await create_account(client)
    before = await _hook_count(client)  # the registry is the process's, shared by every test
    resp = await client.post(
        f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers={**FORM, "X-Request-ID": "hook-42"}
    )
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "hook-42"
    assert resp.headers["content-type"] == "application/json" and resp.json() == {"status": "accepted"}
    assert await _hook_count(client) == before + 1


async def test_a_crash_in_the_handler_is_a_json_500_that_stores_nothing(client, app, rt, monkeypatch):
    acc = await create_account(client)

    async def broken(row):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(app.state.inbox_writer, "write", broken)
    resp = await client.post(f"/hooks/amocrm/{acc['key']}", content=form_body("lead_add"), headers=FORM)
    assert resp.status_code == 500
    assert resp.json() == {"detail": "internal error; see the server log by request id"}
    assert resp.headers.get("x-request-id")
    assert await _rows(rt) == 0


async def test_other_methods_and_longer_paths_still_go_through_fastapi(client):
    acc = await create_account(client)
    assert (await client.get(f"/hooks/amocrm/{acc['key']}")).status_code == 405
    assert (
        await client.post(f"/hooks/amocrm/{acc['key']}/extra", content=form_body("lead_add"), headers=FORM)
    ).status_code == 404
    assert (await client.post("/hooks/nosuchcrm/abc", content=form_body("lead_add"), headers=FORM)).status_code == 404
    assert "/hooks/amocrm/{key}" in (await client.get("/openapi.json")).json()["paths"]
