"""A batch's deals are evaluated beside the next batches, outside the batch's transaction. If the
process dies in between, the deals it applied are not forgotten: the batch marked them due in its
own transaction, and the scheduler's tick evaluates them (not only the next nightly sweep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db import utcnow
from app.findings import scheduler
from app.findings.models import DueMoment, Finding
from app.ingest import worker
from tests.app.test_inbox_worker import post
from tests.conftest import create_account


class _DiesBeforeEvaluating(worker.Evaluations):
    """The process stops right after the batch commits: what is submitted never runs."""

    def submit(self, deals: dict[int, set[str]]) -> None:
        return None


async def _moments(rt, aid: int) -> dict[str, float]:
    async with rt.sessions() as s:
        return dict(
            (await s.execute(select(DueMoment.deal_id, DueMoment.due_epoch).where(DueMoment.account_id == aid))).all()
        )


async def _findings(rt, aid: int) -> set[tuple[str, str]]:
    async with rt.sessions() as s:
        rows = await s.execute(
            select(Finding.rule, Finding.deal_id).where(Finding.account_id == aid, Finding.status == "open")
        )
        return set(rows.all())


async def test_a_batch_whose_evaluation_never_ran_is_evaluated_by_the_tick(client, rt):
    acc = await create_account(client)
    aid = acc["id"]
    await post(client, acc, "lead_add")
    before = utcnow()
    assert await worker.process_batch(rt, evaluations=_DiesBeforeEvaluating(rt)) == 1
    assert await _findings(rt, aid) == set()
    # The mark: due a little after the batch, so that the evaluation seconds later comes first.
    mark = datetime.fromtimestamp((await _moments(rt, aid))["31000001"], UTC)
    assert before + worker.EVALUATION_FALLBACK <= mark <= utcnow() + worker.EVALUATION_FALLBACK

    # Not before the mark: in normal operation the worker's own evaluation comes first.
    assert await scheduler.tick_account(rt, aid, before + timedelta(seconds=30)) == 0
    later = before + timedelta(days=2)
    assert await scheduler.tick_account(rt, aid, later) >= 1
    assert ("deal_without_task", "31000001") in await _findings(rt, aid)
    assert (await _moments(rt, aid)).get("31000001") != mark  # the deal's real moment, or none


async def test_the_evaluation_replaces_the_mark_with_the_deals_real_moment(client, rt, monkeypatch):
    monkeypatch.setattr(worker, "EVALUATION_FALLBACK", timedelta(days=3, seconds=17))  # unmistakable
    acc = await create_account(client)
    aid = acc["id"]
    await post(client, acc, "lead_add")
    before = utcnow()
    assert await worker.process_batch(rt) == 1  # evaluated inline, right after the commit
    after = utcnow()
    assert ("deal_without_task", "31000001") in await _findings(rt, aid)
    moment = (await _moments(rt, aid)).get("31000001")
    marked = (
        (before + worker.EVALUATION_FALLBACK).timestamp()
        <= (moment or 0)
        <= (after + worker.EVALUATION_FALLBACK).timestamp()
    )
    assert not marked
