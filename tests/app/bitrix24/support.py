"""Shared helpers of the Bitrix24 app tests: a seeded portal and mirror readers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.ingest.models import InboxEvent
from app.mirror.models import Deal, Task
from integrations.bitrix24.emulator import Bitrix24Emulator

NOW = datetime.now(UTC).timestamp()
HOUR = 3600.0


def seed(b24: Bitrix24Emulator) -> None:
    b24.add_user(7, "Анна", "Петрова", "anna@example.ru")
    b24.add_user(8, "Борис", "Смирнов", "boris@example.ru")
    for status_id, name, sort, sem in (
        ("NEW", "Новая", 10, None),
        ("PREPARATION", "Подготовка", 20, None),
        ("WON", "Сделка успешна", 60, "S"),
        ("LOSE", "Сделка провалена", 70, "F"),
    ):
        b24.add_stage(0, status_id, name, sort, sem)
    b24.add_category(3, "Опт", 200)
    for status_id, name, sort, sem in (("C3:NEW", "Новая", 10, None), ("C3:WON", "Отгружено", 50, "S")):
        b24.add_stage(3, status_id, name, sort, sem)
    b24.add_contact(311, "Иван Клиентов", ["8 (912) 345-67-89"], assigned_by=7, at=NOW - 50 * HOUR)
    b24.add_deal(
        4521, "Поставка оборудования", "NEW", assigned_by=7, opportunity=150000, contact_id=311, at=NOW - 100 * HOUR
    )
    b24.move_deal(4521, "PREPARATION", at=NOW - 60 * HOUR)
    b24.add_deal(4522, "Опт: бумага", "C3:NEW", category_id=3, assigned_by=8, at=NOW - 30 * HOUR)
    b24.add_company(2917, "ООО «Ромашка»", ["+7 495 123-45-67"], assigned_by=8, at=NOW - 80 * HOUR)
    b24.add_deal(4523, "Закрытая", "WON", assigned_by=8, opportunity=90000, company_id=2917, at=NOW - 20 * HOUR)
    b24.add_activity(10233, 4521, "Позвонить клиенту", NOW - 2 * HOUR, responsible=7, at=NOW - 40 * HOUR)
    b24.add_task(881, 4522, "Подготовить КП", NOW + 20 * HOUR, responsible=8, at=NOW - 10 * HOUR)
    b24.add_task(882, None, "Задача без сделки", NOW + 20 * HOUR, responsible=8, at=NOW - 10 * HOUR)
    b24.add_comment(501, 4521, "Клиент просит перезвонить после обеда в четверг", author=7, at=NOW - 5 * HOUR)


async def deals(rt: Any, account_id: int) -> dict[str, Deal]:
    async with rt.sessions() as s:
        return {d.id: d for d in await s.scalars(select(Deal).where(Deal.account_id == account_id))}


async def tasks(rt: Any, account_id: int) -> dict[str, Task]:
    async with rt.sessions() as s:
        return {t.id: t for t in await s.scalars(select(Task).where(Task.account_id == account_id))}


async def inbox(rt: Any) -> list[InboxEvent]:
    async with rt.sessions() as s:
        return list(await s.scalars(select(InboxEvent).order_by(InboxEvent.id)))
