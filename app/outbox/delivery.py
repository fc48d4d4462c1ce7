"""The delivery worker: sends outbox rows to the CRM in batches, exactly once in effect.

What a row means is its kind's sender's business (senders.py; registered by findings and calls);
this module claims, hands the batch over, and records the typed Outcome it gets back.

A batch is claimed by marking its rows "sending" (attempts + 1, a lease) and committing, before
anything goes out. If the process dies after the CRM accepted the write but before we recorded
it, the lease runs out and the rows come back with attempts > 1. Such a row is never sent again
blindly: every task and note carries a mark of its row (the link to its page, …/f/<row id>-…;
a call-log note, #cw<row id>) and, for a row that was tried
before, the deal's tasks or notes are read back first; a row whose marker is there is recorded
as sent. A close tried before first reads back whether its task is already completed.

Failures follow the row's own schedule: backoff with jitter from seconds to an hour, and after
three days the row goes to "dead", visible in the API, where it can be retried by hand.

No wait inside a claim outlives its lease: once the lease runs out another worker may take the
rows, read back, find nothing yet and send them too. So the CRM clients get the lease as their
deadline (integrations.http.within); a Retry-After that would pass it ends the claim and the rows
come back at now + Retry-After, which is the CRM's pace, not a failure. A stop request does the
same with no delay: the rows go back to "pending" for the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from app.accounts.models import Account
from app.db import is_postgres, utcnow
from app.runtime import Runtime
from integrations.base import CrmAuthError, CrmError, CrmRateLimited, CrmRequestError, CrmStopping
from integrations.http import backoff_delay, stopping, within

from .models import OutboxAction
from .senders import SENDERS, Batch

log = logging.getLogger(__name__)

BATCH = 50  # amoCRM takes at most 50 items per write
# The lease is CRMWATCH_OUTBOX_LEASE_SECONDS (5 minutes). The part of it kept back from the CRM
# calls, for recording their outcome:
LEASE_SPARE = 0.1
GIVE_UP_AFTER = timedelta(days=3)
AUTH_PAUSE = timedelta(minutes=10)
WAIT_FOR_TASK = timedelta(seconds=30)  # a closure waits this long for its task (senders' Outcome.postponed)
IN_FLIGHT = 3  # batches sent at once per worker: keeps the 7 req/s pipe full while the database works


def backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at an hour, with ±20 % jitter so a recovering CRM is not stampeded."""
    return timedelta(seconds=backoff_delay(max(1, attempts), 10.0, 3600.0, jitter=(0.8, 1.2)))


async def claim(rt: Runtime, now: datetime | None = None) -> list[OutboxAction]:
    """Takes up to BATCH due rows of one account and one kind, marked "sending" under a lease."""
    now = now or utcnow()
    async with rt.sessions() as s, s.begin():
        # A lease that ran out means a worker died mid-batch: those rows go back in the queue.
        await s.execute(
            update(OutboxAction)
            .where(OutboxAction.status == "sending", OutboxAction.next_attempt_at <= now)
            .values(status="pending")
        )
        head_q = (
            select(OutboxAction.account_id, OutboxAction.kind)
            .join(Account, Account.id == OutboxAction.account_id)
            .where(
                OutboxAction.status == "pending",
                OutboxAction.next_attempt_at <= now,
                Account.status == "active",
                Account.paused.is_(False),
            )
            .order_by(OutboxAction.id)
            .limit(1)
        )
        head = (await s.execute(head_q)).first()
        if head is None:
            return []
        rows_q = (
            select(OutboxAction)
            .where(
                OutboxAction.account_id == head.account_id,
                OutboxAction.kind == head.kind,
                OutboxAction.status == "pending",
                OutboxAction.next_attempt_at <= now,
            )
            .order_by(OutboxAction.id)
            .limit(BATCH)
        )
        if is_postgres(s):
            rows_q = rows_q.with_for_update(skip_locked=True)
        rows = list(await s.scalars(rows_q))
        for row in rows:
            row.status, row.attempts, row.next_attempt_at = "sending", row.attempts + 1, now + _lease(rt)
    return rows


async def claim_for_lane(rt: Runtime) -> list[OutboxAction]:
    """claim(), where a cancellation (the stop grace ran out) cannot come between its commit and
    the caller: the rows it took are given back before the cancellation goes on."""
    claiming = asyncio.ensure_future(claim(rt))
    try:
        return await asyncio.shield(claiming)
    except asyncio.CancelledError:
        rows = await claiming
        if rows:
            await _record(rt, rows, {}, {}, set(), set(), release=True)
        raise


async def deliver(rt: Runtime, rows: list[OutboxAction]) -> None:
    """Sends one claimed batch through the sender of its kind and records the outcome of every row."""
    if not rows:
        return
    try:
        await _deliver(rt, rows)
    except asyncio.CancelledError:
        # Whatever step it came in: the rows still under this claim go back (the fence in
        # _record leaves those already recorded alone).
        await _record(rt, rows, {}, {}, set(), set(), release=True)
        raise


async def _deliver(rt: Runtime, rows: list[OutboxAction]) -> None:
    now = utcnow()
    async with rt.reads() as s:
        account = await s.get(Account, rows[0].account_id)
    if account is None:
        return
    sender = SENDERS.get(rows[0].kind)
    if sender is None:
        await _record(rt, rows, {}, {}, set(), set(), error=f"no sender for outbox kind {rows[0].kind!r}")
        return
    client = rt.crm_client(account.id, account.crm, account.base_url)
    batch = Batch(rt, client, account, rows, now)
    # On a failure, batch.outcome holds what the sender learnt before it (rows already in the CRM).
    out = batch.outcome
    try:
        with within(_lease_left(rt, rows, now)):
            out = await sender(batch)
    except CrmRateLimited as exc:
        retry_at = utcnow() + timedelta(seconds=max(1.0, exc.retry_after))
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, error=str(exc), retry_at=retry_at)
        return
    except CrmStopping:
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, release=True)
        return
    except asyncio.CancelledError:
        # Cancelled after the stop grace (app/workers.py): a write may be in flight, and the rows'
        # attempts already count this claim, so whoever takes them next reads back first.
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, release=True)
        raise
    except CrmRequestError as exc:
        if len(rows) > 1:
            # One bad item fails the whole request: send each alone to find it.
            await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, retry_now=True)
            for row in rows:
                if stopping():
                    break  # the rest stay pending, due now, for the next process
                if row.id not in out.sent and row.id not in out.postponed and row.id not in out.cancelled:
                    alone = await _reclaim(rt, row.id)
                    if alone is not None:
                        await deliver(rt, [alone])
            return
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, dead_error=str(exc))
        return
    except CrmAuthError as exc:
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, error=str(exc), delay=AUTH_PAUSE)
        return
    except CrmError as exc:
        await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled, error=str(exc))
        return
    finally:
        await client.aclose()
    await _record(rt, rows, out.sent, out.texts, out.postponed, out.cancelled)


def _lease(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.outbox_lease_seconds)


def _lease_left(rt: Runtime, rows: list[OutboxAction], now: datetime) -> float:
    """Seconds the CRM calls of this claim may take: to the end of its lease, less LEASE_SPARE of it."""
    ends = min(row.next_attempt_at for row in rows)
    return (ends - now).total_seconds() - rt.settings.outbox_lease_seconds * LEASE_SPARE


async def _reclaim(rt: Runtime, row_id: int) -> OutboxAction | None:
    """Takes one row back for a solo send; None if another worker got to it first."""
    async with rt.sessions() as s, s.begin():
        row = await s.get(OutboxAction, row_id, with_for_update=True)
        if row is None or row.status != "pending":
            return None
        row.status, row.attempts, row.next_attempt_at = "sending", row.attempts + 1, utcnow() + _lease(rt)
    return row


async def _record(
    rt: Runtime,
    rows: list[OutboxAction],
    done: dict[int, str | None],
    texts: dict[int, str],
    postponed: set[int],
    cancelled: set[int],
    *,
    error: str | None = None,
    dead_error: str | None = None,
    delay: timedelta | None = None,
    retry_now: bool = False,
    retry_at: datetime | None = None,
    release: bool = False,
) -> None:
    """Writes a batch's Outcome (its parts: sent, texts, postponed, cancelled) back to the rows."""
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        sent = [{"row_id": r.id, "ext": done[r.id], "text": texts.get(r.id, "")} for r in rows if r.id in done]
        if sent:
            # The usual outcome, a whole batch sent: one statement for all of it.
            await s.execute(
                update(OutboxAction.__table__)
                .where(OutboxAction.id == bindparam("row_id"))
                .values(
                    status="sent", external_id=bindparam("ext"), text=bindparam("text"), sent_at=now, last_error=None
                ),
                sent,
            )
        for row in rows:
            values: dict[str, Any] = {}
            if row.id in done:
                continue
            elif row.id in cancelled:
                values = {"status": "cancelled", "last_error": "nothing left to close"}
            elif row.id in postponed:
                values = {"status": "pending", "next_attempt_at": now + WAIT_FOR_TASK}
            elif dead_error is not None:
                values = {"status": "dead", "last_error": dead_error[:2000], "text": texts.get(row.id, "")}
            elif retry_now or release:
                values = {"status": "pending", "next_attempt_at": now}
            elif retry_at is not None:
                # The CRM's pace, not a failure: never a reason to give the row up.
                values = {"status": "pending", "last_error": (error or "")[:2000], "next_attempt_at": retry_at}
            else:
                reason = error or "the CRM did not confirm this item"
                give_up = now - row.created_at > GIVE_UP_AFTER
                values = {
                    "status": "dead" if give_up else "pending",
                    "last_error": reason[:2000],
                    "next_attempt_at": now + (delay or backoff(row.attempts)),
                }
            # Only while the claim is still ours: a claim whose lease ran out may have been taken
            # over (attempts counts claims), and the new holder's outcome must not be overwritten.
            await s.execute(
                update(OutboxAction)
                .where(
                    OutboxAction.id == row.id, OutboxAction.status == "sending", OutboxAction.attempts == row.attempts
                )
                .values(**values)
            )
    sent = sum(1 for r in rows if r.id in done)
    log.info(
        "outbox.delivered",
        extra={
            "account_id": rows[0].account_id,
            "kind": rows[0].kind,
            "sent": sent,
            "of": len(rows),
            "error": error or dead_error,
        },
    )


async def deliver_pending(rt: Runtime, max_batches: int = 1000) -> int:
    """Delivers until nothing is due (tests, demo). Returns the number of batches."""
    batches = 0
    while batches < max_batches:
        rows = await claim(rt)
        if not rows:
            break
        await deliver(rt, rows)
        batches += 1
    return batches


async def run_forever(rt: Runtime, stop: asyncio.Event, poll_seconds: float = 2.0) -> None:
    """IN_FLIGHT lanes, each claiming and sending on its own: the rate limiter spaces their
    requests, and one lane's database work overlaps another's wait for a request slot."""

    async def lane() -> None:
        while not stop.is_set():
            rows: list[OutboxAction] = []
            if not rt.intake_busy():
                try:
                    rows = await claim_for_lane(rt)
                    await deliver(rt, rows)
                except Exception:
                    log.exception("outbox.worker_error")
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.outbox_wakeup.wait(), poll_seconds)
                rt.outbox_wakeup.clear()

    # return_exceptions: when cancelled, gather then waits for every lane to give its claim back
    # (otherwise it ends with the first lane that is done, and the others are cut off midway).
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)), return_exceptions=True)
