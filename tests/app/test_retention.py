"""Retention (issue 17, defect 2): the scheduled purge deletes what has served its purpose and
keeps what still matters (failed and dead rows, an open finding's outbox facts, recent rows)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app import workers as app_workers
from app.db import utcnow
from app.findings.models import Finding, FindingEvent
from app.ingest.models import InboxEvent
from app.outbox.models import OutboxAction
from app.retention import service as retention
from app.widget.models import WidgetTokenUse
from tests.conftest import create_account

NOW = utcnow()
OLD = NOW - timedelta(days=31)
RECENT = NOW - timedelta(days=2)


def _inbox(account_id: int, key: str, status: str, at) -> InboxEvent:
    return InboxEvent(
        account_id=account_id,
        source="amocrm",
        dedup_key=key,
        content_type="x",
        payload="leads[add][0][id]=1",
        received_at=at,
        status=status,
        attempts=0,
        next_attempt_at=at,
        processed_at=at if status == "done" else None,
    )


def _finding(account_id: int, entity: str, status: str, resolved_at=None) -> Finding:
    return Finding(
        account_id=account_id,
        rule="overdue_task",
        rule_version=1,
        entity_type="task",
        entity_id=entity,
        deal_id="1",
        severity="warning",
        status=status,
        started_at=OLD,
        opened_at=OLD,
        resolved_at=resolved_at,
    )


def _action(account_id: int, key: str, status: str, finding: Finding | None, at, ref: int | None = None):
    return OutboxAction(
        account_id=account_id,
        finding_id=finding.id if finding else None,
        kind="create_task" if ref is None else "close_task",
        purpose="open",
        dedup_key=key,
        deal_id="1",
        status=status,
        created_at=at,
        sent_at=at if status == "sent" else None,
        ref_id=ref,
    )


async def _ids(rt, model, attr="id") -> set:
    async with rt.sessions() as s:
        return set(await s.scalars(select(getattr(model, attr))))


async def _seed(client, rt) -> dict:
    acc = await create_account(client)
    aid = acc["id"]
    ids: dict = {}
    async with rt.sessions() as s, s.begin():
        rows = {
            "done_old": _inbox(aid, "a", "done", OLD),
            "done_recent": _inbox(aid, "b", "done", RECENT),
            "failed_old": _inbox(aid, "c", "failed", OLD),
            "pending_old": _inbox(aid, "d", "pending", OLD),
        }
        s.add_all(rows.values())
        open_f = _finding(aid, "t1", "open")
        resolved_f = _finding(aid, "t2", "resolved", OLD)
        ancient_f = _finding(aid, "t3", "resolved", NOW - timedelta(days=400))
        fresh_f = _finding(aid, "t4", "resolved", RECENT)
        s.add_all([open_f, resolved_f, ancient_f, fresh_f])
        await s.flush()
        s.add_all(
            [
                FindingEvent(finding_id=ancient_f.id, at=NOW - timedelta(days=401), to_status="open", actor="sweep"),
                FindingEvent(
                    finding_id=ancient_f.id,
                    at=NOW - timedelta(days=400),
                    from_status="open",
                    to_status="resolved",
                    actor="sweep",
                ),
                FindingEvent(finding_id=fresh_f.id, at=RECENT, to_status="resolved", actor="sweep"),
            ]
        )
        acts = {
            "sent_of_open": _action(aid, "k1", "sent", open_f, OLD),  # keeps it from escalating twice
            "sent_of_resolved": _action(aid, "k2", "sent", resolved_f, OLD),
            "cancelled_no_finding": _action(aid, "k3", "cancelled", None, OLD),
            "dead_old": _action(aid, "k4", "dead", resolved_f, OLD),
            "sent_recent": _action(aid, "k5", "sent", resolved_f, RECENT),
            "task_to_close": _action(aid, "k6", "sent", resolved_f, OLD),
        }
        s.add_all(acts.values())
        await s.flush()
        s.add(_action(aid, "k7", "pending", resolved_f, OLD, ref=acts["task_to_close"].id))
        s.add_all(
            [
                WidgetTokenUse(account_id=aid, jti="expired", expires_at=NOW - timedelta(minutes=1)),
                WidgetTokenUse(account_id=aid, jti="live", expires_at=NOW + timedelta(minutes=20)),
            ]
        )
        await s.flush()
        ids["inbox"] = {k: r.id for k, r in rows.items()}
        ids["outbox"] = {k: r.id for k, r in acts.items()}
        ids["findings"] = {"open": open_f.id, "resolved": resolved_f.id, "ancient": ancient_f.id, "fresh": fresh_f.id}
    return ids


async def test_the_purge_deletes_what_served_its_purpose_and_keeps_the_rest(client, rt):
    ids = await _seed(client, rt)
    purged = await retention.purge(rt, NOW)
    assert purged == retention.Purged(inbox_events=1, outbox=2, findings=1, finding_events=2, widget_token_uses=1), (
        purged
    )

    inbox = ids["inbox"]
    assert await _ids(rt, InboxEvent) == {inbox["done_recent"], inbox["failed_old"], inbox["pending_old"]}
    out = ids["outbox"]
    left = await _ids(rt, OutboxAction)
    assert out["sent_of_resolved"] not in left and out["cancelled_no_finding"] not in left
    assert {out["sent_of_open"], out["dead_old"], out["sent_recent"], out["task_to_close"]} <= left
    f = ids["findings"]
    assert await _ids(rt, Finding) == {f["open"], f["resolved"], f["fresh"]}
    assert await _ids(rt, FindingEvent, "finding_id") == {f["fresh"]}
    assert await _ids(rt, WidgetTokenUse, "jti") == {"live"}
    # A second pass finds nothing more.
    assert (await retention.purge(rt, NOW)).total() == 0


async def test_zero_days_keeps_a_table_forever(client, rt):
    await _seed(client, rt)
    rt.settings = rt.settings.model_copy(
        update={"retention_inbox_days": 0, "retention_outbox_days": 0, "retention_findings_days": 0}
    )
    purged = await retention.purge(rt, NOW + timedelta(days=3650))
    assert purged == retention.Purged(widget_token_uses=2)


async def test_the_purge_is_a_periodic_job_of_the_scheduler(client, rt):
    ids = await _seed(client, rt)
    scheduler = app_workers.scheduler(rt)
    every = {name: seconds for name, seconds, _ in scheduler.periodic}
    assert set(every) == {"due-tick", "retention-purge", "morning-digest", "plan-pace"}
    assert every["retention-purge"] == rt.settings.retention_purge_minutes * 60
    scheduler.start()
    try:
        job = scheduler._scheduler.get_job("retention-purge")
        assert job is not None and job.trigger.interval == timedelta(minutes=rt.settings.retention_purge_minutes)
        await scheduler.run_job("retention-purge", retention.purge)  # what APScheduler calls, as the leader
    finally:
        await scheduler.stop()
    assert ids["inbox"]["done_old"] not in await _ids(rt, InboxEvent)
