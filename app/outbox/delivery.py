"""The delivery worker: sends outbox rows to the CRM in batches, exactly once in effect.

A batch is claimed by marking its rows "sending" (attempts + 1, a lease) and committing, before
anything goes out. If the process dies after the CRM accepted the write but before we recorded
it, the lease runs out and the rows come back with attempts > 1. Such a row is never sent again
blindly: every task and note carries a short marker (#cw<row id>) and, for a row that was tried
before, the deal's tasks or notes are read back first; a row whose marker is there is recorded
as sent. Closing a task is idempotent and simply repeats.

Failures follow the row's own schedule: backoff with jitter from seconds to an hour, and after
three days the row goes to "dead", visible in the API, where it can be retried by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, update

from app.accounts.models import Account
from app.calls import calllog
from app.db import is_postgres, utcnow
from app.findings import service as findings_service
from app.findings.models import Finding
from app.rules import config as rules_config
from app.runtime import Runtime
from integrations.base import (
    CrmAuthError,
    CrmError,
    CrmRequestError,
    NewNote,
    NewTask,
    TaskClosure,
)

from .models import OutboxAction

log = logging.getLogger(__name__)

BATCH = 50  # amoCRM takes at most 50 items per write
LEASE = timedelta(minutes=5)
GIVE_UP_AFTER = timedelta(days=3)
AUTH_PAUSE = timedelta(minutes=10)
WAIT_FOR_TASK = timedelta(seconds=30)
IN_FLIGHT = 3  # batches sent at once per worker: keeps the 7 req/s pipe full while the database works


def backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at an hour, with ±20 % jitter so a recovering CRM is not stampeded."""
    base = min(3600.0, 10.0 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def marker(row_id: int) -> str:
    return f"#cw{row_id}"


async def claim(rt: Runtime, now: datetime | None = None) -> list[OutboxAction]:
    """Takes up to BATCH due rows of one account and one kind, marked "sending" under a lease."""
    now = now or utcnow()
    async with rt.sessions() as s, s.begin():
        # A lease that ran out means a worker died mid-batch: those rows go back in the queue.
        await s.execute(update(OutboxAction).where(OutboxAction.status == "sending",
                                                   OutboxAction.next_attempt_at <= now).values(status="pending"))
        head_q = (select(OutboxAction.account_id, OutboxAction.kind)
                  .join(Account, Account.id == OutboxAction.account_id)
                  .where(OutboxAction.status == "pending", OutboxAction.next_attempt_at <= now,
                         Account.status == "active")
                  .order_by(OutboxAction.id).limit(1))
        head = (await s.execute(head_q)).first()
        if head is None:
            return []
        rows_q = (select(OutboxAction).where(OutboxAction.account_id == head.account_id,
                                             OutboxAction.kind == head.kind, OutboxAction.status == "pending",
                                             OutboxAction.next_attempt_at <= now)
                  .order_by(OutboxAction.id).limit(BATCH))
        if is_postgres(s):
            rows_q = rows_q.with_for_update(skip_locked=True)
        rows = list(await s.scalars(rows_q))
        for row in rows:
            row.status, row.attempts, row.next_attempt_at = "sending", row.attempts + 1, now + LEASE
    return rows


@dataclass(frozen=True, slots=True)
class Wording:
    text: str
    due_at: datetime
    task_type_id: str | None
    finding_resolved: bool


async def _words(rt: Runtime, account: Account, rows: Sequence[OutboxAction], now: datetime
                 ) -> dict[int, Wording]:
    """Text (and, for tasks, due time and type) of each row, in the account's language."""
    async with rt.reads() as s:
        ids = {r.finding_id for r in rows if r.finding_id is not None}
        findings = {f.id: f for f in await s.scalars(select(Finding).where(Finding.id.in_(ids)))}
        rendered = {item.id: item for item in await findings_service.render(
            s, account, list(findings.values()), rt.settings.public_url, now=now)}
        doc = await rules_config.load(s, account.id)
    calendar = doc.business_calendar(account.timezone)
    tz = ZoneInfo(account.timezone)
    ru = account.language == "ru"
    out: dict[int, Wording] = {}
    for row in rows:
        item = rendered.get(row.finding_id or -1)
        finding = findings.get(row.finding_id or -1)
        message = item.message if item else ("нарушение" if ru else "a problem")
        since = finding.started_at.astimezone(tz).strftime("%d.%m %H:%M") if finding else "?"
        who = (item.details.get("manager_name") or item.manager_id) if item else None
        text = {
            ("create_task", "open"): f"{message}. Исправьте и отметьте задачу выполненной." if ru
            else f"{message}. Fix it and complete this task.",
            ("create_task", "escalate"): f"Эскалация ({who}): {message}" if ru else f"Escalation ({who}): {message}",
            ("add_note", "open"): f"crmwatch: {message} (с {since})" if ru else f"crmwatch: {message} (since {since})",
            ("add_note", "repeat"): f"crmwatch, напоминание: {message}" if ru else f"crmwatch reminder: {message}",
            ("add_note", "resolve"): f"crmwatch: нарушение устранено: {message}" if ru
            else f"crmwatch: resolved: {message}",
            ("close_task", "resolve"): f"Нарушение устранено: {message}" if ru else f"Resolved: {message}",
        }.get((row.kind, row.purpose), message)
        link = item.link if item else ""
        notify = doc.notify(finding.rule) if finding else rules_config.NotifyIn()
        due = calendar.add_working(now, notify.task_due_hours * 3600)
        if row.kind != "close_task":
            text = f"{text}\n{link} {marker(row.id)}".strip()
        out[row.id] = Wording(text=text, due_at=due, task_type_id=notify.task_type_id,
                              finding_resolved=finding is not None and finding.status == "resolved")
    return out


async def deliver(rt: Runtime, rows: list[OutboxAction]) -> None:
    """Sends one claimed batch and records the outcome of every row."""
    if not rows:
        return
    now = utcnow()
    async with rt.reads() as s:
        account = await s.get(Account, rows[0].account_id)
    if account is None:
        return
    kind = rows[0].kind
    words = await _words(rt, account, rows, now) if kind != calllog.KIND else {}
    client = rt.crm_client(account.id, account.crm, account.base_url)
    done: dict[int, str | None] = {}  # row id → CRM id (None for a closed task)
    postponed: list[OutboxAction] = []
    cancelled: list[OutboxAction] = []
    try:
        if kind == "close_task":
            await _close(rt, client, rows, words, done, postponed, cancelled)
        elif kind == calllog.KIND:
            texts: dict[int, str] = {}
            try:
                await calllog.send(rt, client, account, rows, marker, done, texts, cancelled)
            finally:
                words.update({r.id: Wording(text=texts.get(r.id, ""), due_at=now, task_type_id=None,
                                            finding_resolved=False) for r in rows})
        else:
            await _create(client, kind, rows, words, done, cancelled)
    except CrmRequestError as exc:
        if len(rows) > 1:
            # One bad item fails the whole request: send each alone to find it.
            await _record(rt, rows, done, words, postponed, cancelled, retry_now=True)
            for row in rows:
                if row.id not in done and row not in postponed and row not in cancelled:
                    alone = await _reclaim(rt, row.id)
                    if alone is not None:
                        await deliver(rt, [alone])
            return
        await _record(rt, rows, done, words, postponed, cancelled, dead_error=str(exc))
        return
    except CrmAuthError as exc:
        await _record(rt, rows, done, words, postponed, cancelled, error=str(exc), delay=AUTH_PAUSE)
        return
    except CrmError as exc:
        await _record(rt, rows, done, words, postponed, cancelled, error=str(exc))
        return
    finally:
        await client.aclose()
    await _record(rt, rows, done, words, postponed, cancelled)


async def _create(client, kind: str, rows: list[OutboxAction], words: dict[int, Wording],
                  done: dict[int, str | None], cancelled: list[OutboxAction]) -> None:
    # Tried before and the answer was lost? Then it may already be in the CRM: look first.
    retried = [r for r in rows if r.attempts > 1]
    if retried:
        found = await client.find_marked("task" if kind == "create_task" else "note",
                                         [r.deal_id for r in retried], [marker(r.id) for r in retried])
        for r in retried:
            if marker(r.id) in found:
                done[r.id] = found[marker(r.id)]
            elif words[r.id].finding_resolved:
                cancelled.append(r)  # not in the CRM, and nothing left to say: do not send it now
    todo = [r for r in rows if r.id not in done and r not in cancelled]
    if not todo:
        return
    if kind == "create_task":
        created = await client.create_tasks([
            NewTask(request_id=str(r.id), deal_id=r.deal_id, responsible_user_id=r.user_id, text=words[r.id].text,
                    due_at=words[r.id].due_at, type_id=words[r.id].task_type_id) for r in todo])
    else:
        created = await client.add_notes([NewNote(request_id=str(r.id), deal_id=r.deal_id, text=words[r.id].text)
                                          for r in todo])
    for r in todo:
        if str(r.id) in created:
            done[r.id] = created[str(r.id)]


async def _close(rt: Runtime, client, rows, words, done, postponed, cancelled) -> None:
    async with rt.reads() as s:
        refs = {t.id: t for t in await s.scalars(select(OutboxAction).where(
            OutboxAction.id.in_([r.ref_id for r in rows if r.ref_id])))}
    closures = []
    for row in rows:
        task = refs.get(row.ref_id or -1)
        if task is None or task.status in ("dead", "cancelled"):
            cancelled.append(row)
        elif task.status != "sent" or not task.external_id:
            postponed.append(row)  # the task itself is still on its way
        else:
            closures.append((row, TaskClosure(task_id=task.external_id, result_text=words[row.id].text)))
    if closures:
        await client.close_tasks([c for _, c in closures])
        for row, _ in closures:
            done[row.id] = None


async def _reclaim(rt: Runtime, row_id: int) -> OutboxAction | None:
    """Takes one row back for a solo send; None if another worker got to it first."""
    async with rt.sessions() as s, s.begin():
        row = await s.get(OutboxAction, row_id, with_for_update=True)
        if row is None or row.status != "pending":
            return None
        row.status, row.attempts, row.next_attempt_at = "sending", row.attempts + 1, utcnow() + LEASE
    return row


async def _record(rt: Runtime, rows, done, words, postponed, cancelled, *, error: str | None = None,
                  dead_error: str | None = None, delay: timedelta | None = None, retry_now: bool = False) -> None:
    now = utcnow()
    async with rt.sessions() as s, s.begin():
        sent = [{"row_id": r.id, "ext": done[r.id], "text": words[r.id].text} for r in rows if r.id in done]
        if sent:
            # The usual outcome, a whole batch sent: one statement for all of it.
            await s.execute(update(OutboxAction.__table__).where(OutboxAction.id == bindparam("row_id")).values(
                status="sent", external_id=bindparam("ext"), text=bindparam("text"), sent_at=now, last_error=None),
                sent)
        for row in rows:
            values: dict = {}
            if row.id in done:
                continue
            elif row in cancelled:
                values = {"status": "cancelled", "last_error": "nothing left to close"}
            elif row in postponed:
                values = {"status": "pending", "next_attempt_at": now + WAIT_FOR_TASK}
            elif dead_error is not None:
                values = {"status": "dead", "last_error": dead_error[:2000], "text": words[row.id].text}
            elif retry_now:
                values = {"status": "pending", "next_attempt_at": now}
            else:
                reason = error or "the CRM did not confirm this item"
                give_up = now - row.created_at > GIVE_UP_AFTER
                values = {"status": "dead" if give_up else "pending", "last_error": reason[:2000],
                          "next_attempt_at": now + (delay or backoff(row.attempts))}
            await s.execute(update(OutboxAction).where(OutboxAction.id == row.id).values(**values))
    sent = sum(1 for r in rows if r.id in done)
    log.info("outbox.delivered", extra={"account_id": rows[0].account_id, "kind": rows[0].kind, "sent": sent,
                                        "of": len(rows), "error": error or dead_error})


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
                    rows = await claim(rt)
                    await deliver(rt, rows)
                except Exception:
                    log.exception("outbox.worker_error")
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.outbox_wakeup.wait(), poll_seconds)
                rt.outbox_wakeup.clear()

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
