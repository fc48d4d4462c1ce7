"""CRM webhook intake: authenticate, check the shape, store the raw body, answer fast
(the shared steps are in intake.py; PBX callbacks are in telephony.py)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response
from sqlalchemy import func, select

from app.deps import AccountId, account_or_404
from app.metrics import WEBHOOKS
from app.security import require_admin, webhook_secret_matches
from integrations.base import WebhookMalformed
from integrations.registry import CRM_ADAPTERS, crm_adapter

from .intake import NotText, account_and_body, as_text, refuse, store, with_sealed
from .models import InboxEvent

log = logging.getLogger(__name__)

router = APIRouter(tags=["ingest"])


ACCEPTED = b'{"status":"accepted"}'


def _crm_hook(crm: str) -> Callable[[Request, str], Awaitable[Response]]:
    adapter = crm_adapter(crm)
    accepted = WEBHOOKS.labels(crm, "accepted")  # the hot path's counter, looked up once

    async def receive(request: Request, key: str) -> Response:
        rt = request.app.state.runtime
        got = await account_and_body(request, rt, key, crm, crm)
        if isinstance(got, Response):
            return got
        account, body = got
        try:
            parsed = adapter.check_webhook(body, request.headers.get("content-type"))
        except WebhookMalformed as exc:
            return refuse(status.HTTP_400_BAD_REQUEST, crm, "malformed", f"not a {crm} webhook: {exc}")
        if parsed.secret is not None or account.webhook_secret_hash is not None:
            # The CRM signs deliveries with a shared secret: it must match the saved one. Only a
            # delivery that issues the first secret (an app install) may come before one is saved.
            first = account.webhook_secret_hash is None and parsed.issues_secret and parsed.secret
            if not first and not webhook_secret_matches(parsed.secret, account.webhook_secret_hash):
                return refuse(
                    status.HTTP_401_UNAUTHORIZED, crm, "bad_secret", "the webhook's token does not match the account's"
                )
        if (
            parsed.external_account_id and account.external_id and parsed.external_account_id != account.external_id
        ) or (parsed.subdomain and account.subdomain and parsed.subdomain != account.subdomain):
            return refuse(status.HTTP_401_UNAUTHORIZED, crm, "foreign_account", "the webhook names another CRM account")
        try:
            as_text(body)
            # What is stored holds no secret the CRM sent (README: "Retention and secrets at rest").
            scrubbed = adapter.scrub_webhook(body)
            text = with_sealed(rt.box, as_text(scrubbed.body), scrubbed.sealed)
        except (NotText, WebhookMalformed) as exc:
            return refuse(status.HTTP_400_BAD_REQUEST, crm, "malformed", str(exc))
        await store(
            request, rt, account.id, crm, hashlib.sha256(body).hexdigest(), request.headers.get("content-type"), text
        )
        accepted.inc()
        return Response(ACCEPTED, media_type="application/json")

    receive.__name__ = f"receive_{crm}_webhook"
    receive.__doc__ = (
        f"Receives {crm} webhooks. The key is the account's secret from POST /api/accounts. "
        "Answers 200 once the raw body is durably stored; a redelivery is a no-op."
    )
    return receive


# The handlers by CRM, for the fast path (app/ingest/fastpath.py) as well as for FastAPI.
HOOK_HANDLERS = {crm: _crm_hook(crm) for crm in CRM_ADAPTERS}
for _crm, _handler in HOOK_HANDLERS.items():
    router.add_api_route(
        f"/hooks/{_crm}/{{key}}", _handler, methods=["POST"], responses={400: {}, 401: {}, 404: {}, 413: {}}
    )


admin_router = APIRouter(prefix="/api/accounts", tags=["ingest"], dependencies=[Depends(require_admin)])


@admin_router.get("/{account_id}/inbox")
async def inbox_state(account_id: AccountId, request: Request) -> dict[str, Any]:
    """Webhook deliveries by state, and the latest ones the worker could not apply."""
    rt = request.app.state.runtime
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        counts = dict(
            (
                await s.execute(
                    select(InboxEvent.status, func.count())
                    .where(InboxEvent.account_id == account_id)
                    .group_by(InboxEvent.status)
                )
            ).all()
        )
        failing = await s.scalars(
            select(InboxEvent)
            .where(InboxEvent.account_id == account_id, InboxEvent.attempts > 0, InboxEvent.status != "done")
            .order_by(InboxEvent.id.desc())
            .limit(20)
        )
        return {
            "counts": {state: counts.get(state, 0) for state in ("pending", "done", "failed")},
            "failing": [
                {
                    "id": r.id,
                    "status": r.status,
                    "received_at": r.received_at,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                }
                for r in failing
            ],
        }
