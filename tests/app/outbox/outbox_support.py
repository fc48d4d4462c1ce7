"""Shared set-up for the outbox tests.

An account and its mirror are written row by row (and, when an emulator is given, the same
leads are seeded there), so each test decides exactly which findings exist and when they
opened. Evaluation runs at a chosen instant; delivery runs at the real clock, as in production.

Times: T0 is a Monday 10:00 in Moscow, a plain working day with no public holiday nearby.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select, update

from app.accounts.models import Account
from app.db import utcnow
from app.findings import evaluation as engine
from app.findings import pagelink as finding_page
from app.findings.models import Finding
from app.mirror.models import Deal, Pipeline, Stage, Task, User
from app.outbox.models import OutboxAction
from app.rules import config as rules_config
from app.rules.registry import RULES
from app.runtime import Runtime
from app.security import load_secret
from integrations.amocrm.demo_data import DEMO_TOKEN
from integrations.amocrm.emulator import EmulatorState

MOSCOW = ZoneInfo("Europe/Moscow")
AMO_BASE = "https://demoshop.amocrm.ru"
REAL_BASE = "https://shop.amocrm.ru"
PIPELINE = "4100000"
STAGE = "41000001"
HEAD = "8100001"
MANAGER = "8100002"
OTHER_MANAGER = "8100003"
USERS = {HEAD: "Ольга Смирнова", MANAGER: "Дмитрий Волков", OTHER_MANAGER: "Екатерина Морозова"}


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MOSCOW).astimezone(UTC)


T0 = msk(2025, 10, 6, 10)  # Monday
LONG_AGO = T0 - timedelta(days=20)


def rules_doc(*enabled: str, notify: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A rules document in which only `enabled` rules run, each with the same `notify` overrides."""
    rules = {
        name: {"enabled": name in enabled, **({"notify": notify} if notify and name in enabled else {})}
        for name in RULES
    }
    return {"rules": rules, **top}


async def new_account(
    rt: Runtime,
    *,
    base_url: str = AMO_BASE,
    token: str = DEMO_TOKEN,
    rules: dict[str, Any] | None = None,
    amo: EmulatorState | None = None,
) -> int:
    """An active account with a long-lived token, one pipeline, three users and a rules document."""
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="Магазин",
            crm="amocrm",
            base_url=base_url,
            key=uuid.uuid4().hex,
            timezone="Europe/Moscow",
            region="RU",
            language="ru",
            auth_kind="token",
            credentials=rt.box.seal({"access_token": token}),
            credentials_version=1,
            status="active",
            sync_state="done",
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        aid = account.id
        s.add(Pipeline(account_id=aid, id=PIPELINE, name="Продажи", sort=1))
        s.add(Stage(account_id=aid, pipeline_id=PIPELINE, id=STAGE, name="Первичный контакт", sort=10))
        for user_id, name in USERS.items():
            s.add(User(account_id=aid, id=user_id, name=name))
        doc = rules_config.RulesDocument.model_validate(rules or rules_doc("deal_without_task"))
        await rules_config.save(s, aid, doc)
    if amo is not None:
        amo.add_token(token)
        for user_id, name in USERS.items():
            amo.add_user(int(user_id), name, f"{user_id}@shop.example")
        amo.add_pipeline(int(PIPELINE), "Продажи", [(int(STAGE), "Первичный контакт", 10)], is_main=True)
    return aid


async def set_rules(rt: Runtime, account_id: int, document: dict[str, Any]) -> None:
    async with rt.sessions() as s, s.begin():
        await rules_config.save(s, account_id, rules_config.RulesDocument.model_validate(document))


async def add_deals(
    rt: Runtime,
    account_id: int,
    ids: Iterable[int],
    *,
    manager: str | None = MANAGER,
    created_at: datetime = LONG_AGO,
    stage_entered_at: datetime | None = None,
    amo: EmulatorState | None = None,
) -> list[str]:
    """Open deals with no task (so deal_without_task fires), in the mirror and optionally in the emulator."""
    out = []
    async with rt.sessions() as s, s.begin():
        for deal_id in ids:
            s.add(
                Deal(
                    account_id=account_id,
                    id=str(deal_id),
                    name=f"Сделка {deal_id}",
                    pipeline_id=PIPELINE,
                    stage_id=STAGE,
                    stage_entered_at=stage_entered_at or created_at,
                    stage_entered_source="event",
                    responsible_user_id=manager,
                    is_closed=False,
                    is_deleted=False,
                    created_at=created_at,
                    source_updated_at=created_at,
                    mirrored_at=created_at,
                )
            )
            out.append(str(deal_id))
            if amo is not None:
                amo.add_lead(
                    int(deal_id),
                    f"Сделка {deal_id}",
                    int(PIPELINE),
                    int(STAGE),
                    responsible_user_id=int(manager) if manager else None,
                    created_at=int(created_at.timestamp()),
                )
    return out


async def plan_task(rt: Runtime, account_id: int, deal_id: str, at: datetime) -> None:
    """The manager plans a next step on the deal (the mirror learns of it): deal_without_task clears."""
    async with rt.sessions() as s, s.begin():
        s.add(
            Task(
                account_id=account_id,
                id=f"9{deal_id}",
                deal_id=deal_id,
                entity_type="lead",
                entity_id=deal_id,
                text="Позвонить",
                type_id="1",
                responsible_user_id=MANAGER,
                due_at=at + timedelta(days=1),
                is_completed=False,
                is_deleted=False,
                created_at=at,
                created_by=MANAGER,
                source_updated_at=at,
            )
        )


async def evaluate(rt: Runtime, account_id: int, now: datetime) -> engine.EvaluationResult:
    async with rt.sessions() as s, s.begin():
        return await engine.evaluate(s, account_id, now=now)


async def outbox(rt: Runtime, **where: Any) -> list[OutboxAction]:
    async with rt.sessions() as s:
        query = select(OutboxAction).where(*(getattr(OutboxAction, k) == v for k, v in where.items()))
        return list(await s.scalars(query.order_by(OutboxAction.id)))


async def findings(rt: Runtime, account_id: int, rule: str | None = None) -> list[Finding]:
    async with rt.sessions() as s:
        query = select(Finding).where(Finding.account_id == account_id)
        if rule is not None:
            query = query.where(Finding.rule == rule)
        return list(await s.scalars(query.order_by(Finding.id)))


async def make_due(rt: Runtime, *, status: str = "pending", at: datetime | None = None) -> int:
    """Moves the rows' next attempt (a backoff, or a lease for "sending") to the past."""
    async with rt.sessions() as s, s.begin():
        result = await s.execute(
            update(OutboxAction)
            .where(OutboxAction.status == status)
            .values(next_attempt_at=at or utcnow() - timedelta(seconds=1))
        )
        return result.rowcount or 0


def page_link(rt: Runtime, row_id: int) -> str:
    """The link a task or note of this outbox row ends with: its finding's page."""
    return finding_page.url(rt.settings.public_url, load_secret(rt.settings), row_id)


def crm_tasks(amo: EmulatorState) -> list[dict]:
    return [t for t in amo.tasks.values() if "/f/" in (t.get("text") or "")]


def crm_notes(amo: EmulatorState) -> list[dict]:
    return [n for n in amo.notes.values() if "/f/" in ((n.get("params") or {}).get("text") or "")]


def writes(amo: EmulatorState, since: int = 0) -> list[tuple[str, str, str]]:
    return [r for r in amo.request_log[since:] if r[0] in ("POST", "PATCH")]


class FakeAmo:
    """Answers amoCRM's write and read-back calls at the wire (for respx), keeping what was created.

    Only the shapes crmwatch relies on: created rows echo `request_id`, reads are HAL pages, an
    empty list is a bodiless 204.
    """

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self._next = 70000000

    def _id(self) -> int:
        self._next += 1
        return self._next

    def create(self, request: httpx.Request, key: str) -> httpx.Response:
        items = json.loads(request.content)
        store = self.tasks if key == "tasks" else self.notes
        rows = []
        for item in items:
            record = {**item, "id": self._id()}
            store[record["id"]] = record
            rows.append({"id": record["id"], "request_id": item.get("request_id")})
        return httpx.Response(200, json={"_embedded": {key: rows}})

    def create_tasks(self, request: httpx.Request) -> httpx.Response:
        return self.create(request, "tasks")

    def add_notes(self, request: httpx.Request) -> httpx.Response:
        return self.create(request, "notes")

    def read(self, request: httpx.Request, key: str) -> httpx.Response:
        deals = {int(v) for v in request.url.params.get_list("filter[entity_id][]")}
        store = self.tasks if key == "tasks" else self.notes
        rows = [r for r in store.values() if r.get("entity_id") in deals]
        if not rows or int(request.url.params.get("page", "1")) > 1:
            return httpx.Response(204)
        return httpx.Response(200, json={"_page": 1, "_embedded": {key: rows}})

    def read_tasks(self, request: httpx.Request) -> httpx.Response:
        return self.read(request, "tasks")

    def read_notes(self, request: httpx.Request) -> httpx.Response:
        return self.read(request, "notes")


def bodies(route: Any) -> list[Any]:
    """The JSON bodies a respx route received, in order."""
    return [json.loads(call.request.content) for call in route.calls]
