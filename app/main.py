"""The FastAPI application and the background roles that run beside it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import errors, openapi
from app import workers as app_workers
from app.accounts.endpoints import router as accounts_router
from app.calls.endpoints import router as telephony_router
from app.dashboard.endpoints import admin_router as dashboard_admin_router
from app.dashboard.endpoints import router as dashboard_router
from app.digest.endpoints import router as digest_router
from app.findings.endpoints import router as findings_router
from app.findings.page import router as finding_page_router
from app.ingest.endpoints import HOOK_HANDLERS
from app.ingest.endpoints import admin_router as inbox_router
from app.ingest.endpoints import router as ingest_router
from app.ingest.fastpath import HookFastPath
from app.ingest.keys import KeyCache
from app.ingest.telephony import hooks_router as telephony_hooks_router
from app.ingest.writer import InboxWriter
from app.middleware import DeclaredBodyLimit, RequestContext
from app.mirror.endpoints import router as mirror_router
from app.ops import pages
from app.ops.endpoints import router as ops_router
from app.outbox.endpoints import router as outbox_router
from app.payments.endpoints import router as payments_router
from app.plans.endpoints import router as plans_router
from app.reports.endpoints import calls_router as call_stats_router
from app.reports.endpoints import router as reports_router
from app.rules.endpoints import router as rules_router
from app.runtime import Runtime
from app.settings import Settings, get_settings
from app.widget.endpoints import router as widget_router

log = logging.getLogger(__name__)


class CrmwatchApp(FastAPI):
    """FastAPI, with the webhook intake dispatched before FastAPI's own stack (see app/ingest/fastpath.py)."""

    hooks: HookFastPath

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.hooks.match(scope):
            scope["app"] = self  # what Request.app reads, as Starlette would set it
            await self.hooks(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, run_workers: bool | None = None
) -> FastAPI:
    settings = settings or (runtime.settings if runtime else get_settings())
    workers = settings.run_workers if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime.build(settings)
        app.state.runtime = rt
        app.state.keys = KeyCache(rt.reads)
        app.state.inbox_writer = writer = InboxWriter(rt.engine)
        writer.start()
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        scheduler = None
        if workers:
            tasks = app_workers.start(rt, stop)
            scheduler = app_workers.scheduler(rt)
            scheduler.start()
        log.info("crmwatch.started", extra={"workers": workers, "database": rt.engine.dialect.name})
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop()
            await app_workers.finish(rt, stop, tasks)
            await writer.stop()
            if runtime is None:
                await rt.dispose()

    app = CrmwatchApp(
        title="crmwatch",
        version="0.1.0",
        summary="Keeps a sales team's CRM honest: overdue tasks, deals without a next step, stuck deals, "
        "unlogged calls.",
        lifespan=lifespan,
        # No route reads a body without a bound (a 413 past it); the hooks have their own below.
        max_body_size=settings.max_request_bytes,
        # Served by app/ops/pages.py from a package, not from a CDN: the docs work offline.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    openapi.install(app)
    # The webhook route first: routes are matched in order, and it takes most of the traffic.
    app.include_router(ingest_router, max_body_size=settings.max_webhook_bytes)
    app.include_router(telephony_hooks_router, max_body_size=settings.max_webhook_bytes)
    app.include_router(ops_router)
    pages.install(app)
    app.include_router(accounts_router)
    app.include_router(mirror_router)
    app.include_router(rules_router)
    app.include_router(findings_router)
    app.include_router(finding_page_router)
    app.include_router(outbox_router)
    app.include_router(inbox_router)
    app.include_router(widget_router)
    app.include_router(telephony_router)
    app.include_router(reports_router)
    app.include_router(call_stats_router)
    app.include_router(plans_router)
    app.include_router(digest_router)
    app.include_router(payments_router)
    app.include_router(dashboard_admin_router)
    app.include_router(dashboard_router)
    app.add_middleware(DeclaredBodyLimit, limit=settings.max_request_bytes, webhook_limit=settings.max_webhook_bytes)
    app.add_middleware(RequestContext)
    app.hooks = HookFastPath(HOOK_HANDLERS)
    return app
