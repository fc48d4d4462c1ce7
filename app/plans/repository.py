"""Every query of the plans."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, column, delete, func, literal, literal_column, select, union_all, values
from sqlalchemy.ext.asyncio import AsyncSession

from app.calls.models import Call
from app.mirror.models import Deal, Stage, StageHistory, Task, User
from app.mirror.repository import closed_between, deal_stage
from app.rules.config import MilestoneIn, PlansIn

from .models import Plan


async def month(s: AsyncSession, account_id: int, month: str) -> list[Plan]:
    return list(
        await s.scalars(
            select(Plan).where(Plan.account_id == account_id, Plan.month == month).order_by(Plan.manager_id)
        )
    )


async def replace_month(s: AsyncSession, account_id: int, month: str, rows: Iterable[Plan]) -> None:
    await s.execute(delete(Plan).where(Plan.account_id == account_id, Plan.month == month))
    s.add_all(list(rows))
    await s.flush()


async def known_users(s: AsyncSession, account_id: int, ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    return set(await s.scalars(select(User.id).where(User.account_id == account_id, User.id.in_(wanted))))


# --- milestones and wins per manager ------------------------------------------------------------------


def _half(at: Any, split: datetime) -> Any:
    return case((at >= split, 1), else_=0).label("half")


def _stage_keys(account_id: int, cfg: PlansIn, start: datetime, split: datetime, end: datetime) -> Any | None:
    """(half, manager, milestone, key) for each deal that entered a milestone's stage in [start, end),
    every stage milestone in one pass over the period's stage moves (a union per milestone read
    them and the deals once each): the moves are joined to a small table of the wanted
    (pipeline, stage, milestone), so a stage two milestones name counts for both."""
    wanted_rows = sorted(
        {(*key.split("/", 1), name) for name, m in cfg.milestones.items() for key in m.stages}  # type: ignore[misc]
    )
    if not wanted_rows:
        return None
    # A CTE of VALUES: SQLite accepts VALUES as a table only there.
    wanted = (
        values(
            column("pipeline_id", String()),
            column("stage_id", String()),
            column("milestone", String()),
            name="wanted",
        )
        .data(wanted_rows)
        .cte("wanted")
    )
    pipeline = func.coalesce(StageHistory.pipeline_id, Deal.pipeline_id)
    return (
        select(
            _half(StageHistory.entered_at, split),
            Deal.responsible_user_id.label("manager_id"),
            wanted.c.milestone.label("milestone"),
            (literal("d:", String()) + StageHistory.deal_id).label("k"),
        )
        .join(Deal, and_(Deal.account_id == StageHistory.account_id, Deal.id == StageHistory.deal_id))
        .join(wanted, and_(wanted.c.stage_id == StageHistory.stage_id, wanted.c.pipeline_id == pipeline))
        .where(
            StageHistory.account_id == account_id,
            StageHistory.entered_at >= start,
            StageHistory.entered_at < end,
            # The index on the moves carries the stage: most moves are left behind before the deal is read.
            StageHistory.stage_id.in_(sorted({r[1] for r in wanted_rows})),
            Deal.is_deleted.is_(False),
        )
    )


def _counted_calls(account_id: int, start: datetime, end: datetime, min_call: int) -> list[Any]:
    """A call that is a first contact: final, answered, at least min_call seconds, with a client."""
    return [
        Call.account_id == account_id,
        Call.is_final.is_(True),
        Call.status == "answered",
        Call.talk_seconds >= min_call,
        Call.direction.is_distinct_from("internal"),
        Call.started_at >= start,
        Call.started_at < end,
    ]


def _number_keys(
    account_id: int, names: list[str], start: datetime, split: datetime, end: datetime, min_call: int
) -> list[Any]:
    """(half, manager, milestone, count) of the distinct numbers of the calls bound to no deal, per
    call milestone. Their keys (a number) are never a deal's, so they are counted apart from the
    deal keys and added: the one large set (every number called in 120 days) is hashed on its own,
    narrow, instead of in one set with the deals' keys."""
    out = []
    for name in names:
        numbers = (
            select(
                _half(Call.started_at, split).label("half"),
                Call.manager_id.label("manager_id"),
                Call.client_number.label("number"),
            )
            .where(
                *_counted_calls(account_id, start, end, min_call),
                Call.deal_id.is_(None),
                Call.client_number.is_not(None),
                Call.manager_id.is_not(None),
            )
            .group_by(literal_column("1"), literal_column("2"), literal_column("3"))
            .subquery()
            .c
        )
        out.append(
            select(
                numbers.half, numbers.manager_id, literal(name, String()).label("milestone"), func.count().label("n")
            ).group_by(numbers.half, numbers.manager_id)
        )
    return out


def _milestone_keys(
    account_id: int, name: str, m: MilestoneIn, start: datetime, split: datetime, end: datetime, min_call: int
) -> list:
    """(half, manager, milestone, key) for each sign other than a stage (see _stage_keys) that a deal
    reached the milestone in [start, end) (half 0 before `split`, 1 from it on):
    the key is the deal (a call with no deal: its number), so a deal counts once per milestone
    whichever sources say so."""
    label = literal(name, String())
    parts: list[Any] = []
    if m.task_types:
        parts.append(
            select(
                _half(Task.completed_at, split),
                Task.responsible_user_id.label("manager_id"),
                label.label("milestone"),
                func.coalesce(literal("d:", String()) + Task.deal_id, literal("t:", String()) + Task.id).label("k"),
            ).where(
                Task.account_id == account_id,
                Task.is_deleted.is_(False),
                Task.completed_at >= start,
                Task.completed_at < end,
                Task.type_id.in_(list(m.task_types)),
            )
        )
    if m.calls:
        # Only the calls bound to a deal: the others' keys are their numbers (see _number_keys).
        parts.append(
            select(
                _half(Call.started_at, split),
                Call.manager_id.label("manager_id"),
                label.label("milestone"),
                (literal("d:", String()) + Call.deal_id).label("k"),
            ).where(*_counted_calls(account_id, start, end, min_call), Call.deal_id.is_not(None))
        )
    return parts


async def milestone_counts(
    s: AsyncSession, account_id: int, cfg: PlansIn, start: datetime, split: datetime, end: datetime
) -> dict[tuple[int, str, str], int]:
    """Distinct deals per (half, manager, milestone) that reached it in [start, end): one pass over
    the history window (half 0, before `split`) and the month (half 1)."""
    parts = [
        part
        for name, m in cfg.milestones.items()
        for part in _milestone_keys(account_id, name, m, start, split, end, cfg.min_call_seconds)
    ]
    stage_part = _stage_keys(account_id, cfg, start, split, end)
    if stage_part is not None:
        parts.append(stage_part)
    numbered = _number_keys(
        account_id, [n for n, m in cfg.milestones.items() if m.calls], start, split, end, cfg.min_call_seconds
    )
    if not parts and not numbered:
        return {}
    counted: list[Any] = list(numbered)
    if parts:
        k = union_all(*parts).subquery().c
        # The distinct keys first, then a count per group: a hash of the keys rather than a sort of
        # them all per group (count(DISTINCT) sorts).
        keys = (
            select(k.half, k.manager_id, k.milestone, k.k)
            .where(k.manager_id.is_not(None))
            .group_by(k.half, k.manager_id, k.milestone, k.k)
            .subquery()
            .c
        )
        counted.append(
            select(keys.half, keys.manager_id, keys.milestone, func.count()).group_by(
                keys.half, keys.manager_id, keys.milestone
            )
        )
    out: dict[tuple[int, str, str], int] = {}
    for r in await s.execute(union_all(*counted)):
        key = (int(r[0]), r[1], r[2])
        out[key] = out.get(key, 0) + int(r[3])
    return out


async def won(
    s: AsyncSession, account_id: int, start: datetime, split: datetime, end: datetime
) -> dict[tuple[int, str], tuple[int, float]]:
    """Won deals closed in [start, end) per (half, responsible manager): (count, revenue)."""
    half = case((Deal.closed_at >= split, 1), else_=0)
    rows = await s.execute(
        select(half, Deal.responsible_user_id, func.count(), func.coalesce(func.sum(Deal.price), 0))
        .join(Stage, deal_stage())
        .where(
            Deal.account_id == account_id,
            *closed_between(start, end),
            Deal.responsible_user_id.is_not(None),
            Stage.kind == "won",
        )
        .group_by(half, Deal.responsible_user_id)
    )
    return {(int(r[0]), r[1]): (int(r[2]), float(r[3] or 0)) for r in rows}


async def users(s: AsyncSession, account_id: int) -> dict[str, str | None]:
    return {r.id: r.name for r in await s.execute(select(User.id, User.name).where(User.account_id == account_id))}
