"""Hand-built mirror states for the rule tests: plain functions that add rows with sensible defaults,
and a few helpers to run the engine at a fixed instant and read findings and their history back.

Every time is given in Moscow wall-clock time (`msk`) and stored as aware UTC, like the mirror does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.calendar.business import BusinessCalendar
from app.findings import evaluation as engine
from app.findings.models import Finding, FindingEvent
from app.mirror.models import Deal, Note, Pipeline, Stage, Task, User
from app.mirror.text import fold
from app.rules import config as rules_config
from app.runtime import Runtime

MOSCOW = ZoneInfo("Europe/Moscow")

# Default ids: one pipeline with two open stages, two managers.
PIPELINE = "P1"
STAGE = "S1"
MANAGER = "u1"
OTHER_MANAGER = "u2"


@dataclass(frozen=True, slots=True)
class CrmProfile:
    """What differs between CRMs in a mirror the rules read: the account, and the kind of a task."""

    crm: str
    base_url: str
    task_type_id: str
    task_entity_type: str


PROFILES = {
    "amocrm": CrmProfile("amocrm", "https://demoshop.amocrm.ru", "1", "lead"),
    # A Bitrix24 portal's "tasks" are to-do activities (дела) on the deal.
    "bitrix24": CrmProfile("bitrix24", "https://demoshop.bitrix24.ru", "activity", "deal"),
}
# The rule tests run once per profile (tests/app/rules/conftest.py swaps this).
PROFILE = PROFILES["amocrm"]


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A Moscow wall-clock moment as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=MOSCOW).astimezone(UTC)


def default_calendar() -> BusinessCalendar:
    """The calendar an account gets without a rules document: RU holidays, 09:00-18:00 Mon-Fri, Moscow."""
    return rules_config.RulesDocument().business_calendar("Europe/Moscow")


# ---- rows -------------------------------------------------------------------------------------------


async def new_account(rt: Runtime, *, timezone: str = "Europe/Moscow") -> int:
    """An account row with the mirror's reference data (pipeline, stages, managers); returns its id."""
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="Демо",
            crm=PROFILE.crm,
            base_url=PROFILE.base_url,
            key=uuid.uuid4().hex,
            timezone=timezone,
            auth_kind="token",
            credentials=rt.box.seal({"access_token": "unused"}),
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        aid = account.id
        s.add(Pipeline(account_id=aid, id=PIPELINE, name="Продажи", sort=1))
        s.add(Stage(account_id=aid, pipeline_id=PIPELINE, id=STAGE, name="Первичный контакт", sort=10))
        s.add(Stage(account_id=aid, pipeline_id=PIPELINE, id="S2", name="Переговоры", sort=20))
        s.add(Stage(account_id=aid, pipeline_id=PIPELINE, id="S3", name="Договор", sort=30))
        s.add(User(account_id=aid, id=MANAGER, name="Иван Волков"))
        s.add(User(account_id=aid, id=OTHER_MANAGER, name="Анна Лебедева"))
    return aid


def add_pipeline(s: AsyncSession, account_id: int, pipeline_id: str, name: str, stages: dict[str, str]) -> None:
    s.add(Pipeline(account_id=account_id, id=pipeline_id, name=name))
    for sort, (stage_id, stage_name) in enumerate(stages.items()):
        s.add(Stage(account_id=account_id, pipeline_id=pipeline_id, id=stage_id, name=stage_name, sort=sort))


def add_deal(
    s: AsyncSession,
    account_id: int,
    deal_id: str,
    *,
    created_at: datetime,
    stage_entered_at: datetime | None = None,
    pipeline_id: str = PIPELINE,
    stage_id: str = STAGE,
    responsible_user_id: str | None = MANAGER,
    is_closed: bool = False,
    is_deleted: bool = False,
) -> Deal:
    deal = Deal(
        account_id=account_id,
        id=deal_id,
        name=f"Сделка {deal_id}",
        pipeline_id=pipeline_id,
        stage_id=stage_id,
        stage_entered_at=stage_entered_at or created_at,
        stage_entered_source="event",
        responsible_user_id=responsible_user_id,
        is_closed=is_closed,
        is_deleted=is_deleted,
        created_at=created_at,
        source_updated_at=created_at,
        mirrored_at=created_at,
    )
    s.add(deal)
    return deal


def add_task(
    s: AsyncSession,
    account_id: int,
    task_id: str,
    deal_id: str,
    *,
    due_at: datetime,
    created_at: datetime | None = None,
    responsible_user_id: str | None = MANAGER,
    is_completed: bool = False,
    completed_at: datetime | None = None,
    is_deleted: bool = False,
    previous_due_at: datetime | None = None,
    due_moved_at: datetime | None = None,
    text: str = "Позвонить клиенту",
) -> Task:
    created = created_at or due_at
    task = Task(
        account_id=account_id,
        id=task_id,
        deal_id=deal_id,
        entity_type=PROFILE.task_entity_type,
        entity_id=deal_id,
        text=text,
        type_id=PROFILE.task_type_id,
        responsible_user_id=responsible_user_id,
        due_at=due_at,
        previous_due_at=previous_due_at,
        due_moved_at=due_moved_at,
        is_completed=is_completed,
        completed_at=completed_at,
        is_deleted=is_deleted,
        created_at=created,
        created_by=responsible_user_id,
        source_updated_at=completed_at or due_moved_at or created,
    )
    s.add(task)
    return task


def add_note(
    s: AsyncSession,
    account_id: int,
    note_id: str,
    deal_id: str,
    text: str | None,
    *,
    created_at: datetime,
    kind: str = "common",
    created_by: str | None = MANAGER,
) -> Note:
    note = Note(
        account_id=account_id,
        id=note_id,
        entity_type="lead",
        entity_id=deal_id,
        deal_id=deal_id,
        kind=kind,
        text=text,
        text_norm=fold(text),
        created_by=created_by,
        created_at=created_at,
        params={},
    )
    s.add(note)
    return note


async def change(rt: Runtime, model: type[Any], account_id: int, entity_id: str, **values: Any) -> None:
    """Updates one mirror row in its own transaction, as an ingested CRM event would."""
    async with rt.sessions() as s, s.begin():
        result = await s.execute(
            update(model).where(model.account_id == account_id, model.id == entity_id).values(**values)
        )
        assert result.rowcount == 1, f"no {model.__name__} {entity_id}"


async def save_rules(rt: Runtime, account_id: int, document: dict[str, Any]) -> None:
    async with rt.sessions() as s, s.begin():
        await rules_config.save(s, account_id, rules_config.RulesDocument.model_validate(document))


# ---- engine and findings ----------------------------------------------------------------------------


async def evaluate(
    rt: Runtime, account_id: int, now: datetime, *, deal_ids: list[str] | None = None, actor: str = "sweep"
) -> engine.EvaluationResult:
    async with rt.sessions() as s, s.begin():
        return await engine.evaluate(s, account_id, deal_ids=deal_ids, now=now, actor=actor)


async def findings(rt: Runtime, account_id: int, rule: str | None = None) -> list[Finding]:
    async with rt.sessions() as s:
        query = select(Finding).where(Finding.account_id == account_id)
        if rule is not None:
            query = query.where(Finding.rule == rule)
        return list(await s.scalars(query.order_by(Finding.id)))


async def finding(rt: Runtime, account_id: int, rule: str, entity_id: str) -> Finding | None:
    rows = [f for f in await findings(rt, account_id, rule) if f.entity_id == entity_id]
    assert len(rows) <= 1, f"duplicate findings for {rule}/{entity_id}"
    return rows[0] if rows else None


@dataclass(frozen=True)
class Event:
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None


async def history(rt: Runtime, finding_id: int) -> list[Event]:
    async with rt.sessions() as s:
        rows = await s.scalars(
            select(FindingEvent).where(FindingEvent.finding_id == finding_id).order_by(FindingEvent.id)
        )
        return [Event(r.from_status, r.to_status, r.actor, r.reason) for r in rows]


async def all_events(rt: Runtime) -> list[tuple[Any, ...]]:
    async with rt.sessions() as s:
        rows = await s.scalars(select(FindingEvent).order_by(FindingEvent.id))
        return [(r.finding_id, r.at, r.from_status, r.to_status, r.actor, r.reason) for r in rows]
