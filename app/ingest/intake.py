"""What every webhook intake shares, CRM and PBX alike: the bounded body read, the refusal
(counted), the text check, and storing the raw delivery as an inbox row (built only here).

A CRM waits ~2 s for us and switches a slow hook off, so nothing here may depend on the CRM or
on the mirror: the parsing into domain events happens later, in the inbox worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

# Starlette's own names (what fastapi re-exports): the worker imports this module through
# catchup.py, and importing fastapi was a third of its start-up.
from starlette import status
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.db import utcnow
from app.metrics import WEBHOOKS
from app.runtime import Runtime
from app.security import CredentialBox


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing to buffer more than `limit` bytes whatever Content-Length claims."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def refuse(code: int, source: str, outcome: str, detail: str) -> JSONResponse:
    """A refused delivery: counted by source and outcome, answered with what was wrong."""
    WEBHOOKS.labels(source, outcome).inc()
    return JSONResponse({"detail": detail}, status_code=code)


async def account_and_body(
    request: Request, rt: Runtime, key: str, source: str, crm: str | None = None
) -> tuple[Any, bytes] | JSONResponse:
    """The first steps of every intake: the account the key names (of that CRM, when given) and
    the body within the size limit; or the refusal to answer with."""
    account = await request.app.state.keys.lookup(key)
    if account is None or (crm is not None and account.crm != crm):
        return refuse(status.HTTP_404_NOT_FOUND, source, "unknown_key", "unknown webhook key")
    try:
        body = await read_body(request, rt.settings.max_webhook_bytes)
    except BodyTooLarge:
        return refuse(
            status.HTTP_413_CONTENT_TOO_LARGE, source, "too_large", f"body over {rt.settings.max_webhook_bytes} bytes"
        )
    return account, body


class NotText(ValueError):
    """The body cannot be stored as text: not UTF-8, or a NUL byte (no text column, PostgreSQL's
    least of all, can hold one)."""


def as_text(body: bytes | str) -> str:
    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotText("the body is not UTF-8") from None
    if "\x00" in text:
        raise NotText("the body contains a NUL byte")
    return text


# A form field the stored body ends with when a delivery carried secrets the worker still needs (a
# Bitrix24 install's OAuth pair): those fields, sealed with the credentials' key (Fernet).
SEALED_FIELD = "crmwatch_sealed"


def with_sealed(box: CredentialBox, text: str, sealed: Mapping[str, str]) -> str:
    """The scrubbed body as stored: plus the secrets it still needs, encrypted."""
    if not sealed:
        return text
    return f"{text}&{SEALED_FIELD}={box.seal(dict(sealed)).decode('ascii')}"


def unsealed(box: CredentialBox, text: str) -> str:
    """The stored body with its sealed fields back in plain form, for the parse (in memory only)."""
    head, sep, token = text.rpartition(f"&{SEALED_FIELD}=")
    if not sep:
        return text
    return f"{head}&{urlencode(box.open(token.encode('ascii')))}"


def inbox_row(
    account_id: int, source: str, dedup_key: str, content_type: str | None, payload: str, now: datetime
) -> dict[str, Any]:
    """An inbox row, due at once: every intake (webhooks, PBX callbacks, the CRM's own queue) builds it here."""
    return {
        "account_id": account_id,
        "source": source,
        "dedup_key": dedup_key,
        "content_type": (content_type or "")[:100],
        "payload": payload,
        "received_at": now,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
    }


async def store(
    request: Request, rt: Runtime, account_id: int, source: str, dedup_key: str, content_type: str | None, payload: str
) -> None:
    """Stores one accepted delivery durably (before the answer goes out) and wakes the worker;
    background work stands back while deliveries keep coming (Runtime.intake_busy)."""
    await request.app.state.inbox_writer.write(
        inbox_row(account_id, source, dedup_key, content_type, payload, utcnow())
    )
    rt.inbox_wakeup.set()
    rt.last_intake = time.monotonic()
