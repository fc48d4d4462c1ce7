from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.db import utcnow
from app.ingest import lag
from app.metrics import INBOX_APPLY_RATE, INBOX_DEPTH, INBOX_OLDEST_AGE
from app.runtime import Runtime

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Liveness and readiness: 200 when the database answers, 503 when it does not."""
    rt = request.app.state.runtime
    try:
        async with rt.reads() as s:
            await s.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    await _inbox_gauges(request.app.state.runtime)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _inbox_gauges(rt: Runtime) -> None:
    """The inbox's lag as the database has it at scrape time, whichever process applies it
    (`crmwatch worker` apart from `serve`). Best effort: a database that does not answer
    leaves the figures out rather than fail the scrape."""
    now = utcnow()
    try:
        async with rt.reads() as s:
            waiting = await lag.by_account(s)
            rate = await lag.apply_rate(s, now)
    except Exception:
        return
    # Only accounts with rows waiting are listed: an account that caught up drops out.
    INBOX_DEPTH.clear()
    INBOX_OLDEST_AGE.clear()
    for account_id, account_lag in waiting.items():
        INBOX_DEPTH.labels(str(account_id)).set(account_lag.pending)
        INBOX_OLDEST_AGE.labels(str(account_id)).set(account_lag.seconds(now))
    INBOX_APPLY_RATE.set(rate)
