"""Which kinds of task count for overdue_task and deal_without_task (`task_types`, per account):
on a Bitrix24 portal both activities (дела) and tasks count unless the account narrows it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.mirror.models import Task
from tests.app.rules import mirror_builder
from tests.app.rules.mirror_builder import add_deal, add_task, change, evaluate, finding, msk, new_account, save_rules

CREATED = msk(2025, 12, 8, 10, 0)  # a Monday


@pytest.fixture(autouse=True)
def crm_profile(monkeypatch: pytest.MonkeyPatch) -> mirror_builder.CrmProfile:
    """Only on a Bitrix24 portal (overrides the conftest's two profiles): it has two kinds of task."""
    profile = mirror_builder.PROFILES["bitrix24"]
    monkeypatch.setattr(mirror_builder, "PROFILE", profile)
    return profile


async def _deal_with_a_task_of_kind(rt, kind: str, task_types: list[str] | None) -> int:
    aid = await new_account(rt)
    rules: dict = {"settings": {"task_types": task_types}} if task_types is not None else {}
    await save_rules(rt, aid, {"rules": {"deal_without_task": rules, "overdue_task": rules}})
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=CREATED)
        add_task(s, aid, "T1", "D1", due_at=CREATED + timedelta(hours=1), created_at=CREATED)
    await change(rt, Task, aid, "T1", type_id=kind)
    return aid


@pytest.mark.parametrize("kind", ["activity", "task"])
async def test_by_default_activities_and_tasks_both_count(rt, kind):
    aid = await _deal_with_a_task_of_kind(rt, kind, None)
    await evaluate(rt, aid, CREATED + timedelta(hours=3))
    assert await finding(rt, aid, "deal_without_task", "D1") is None
    assert (await finding(rt, aid, "overdue_task", "T1")).status == "open"


async def test_an_account_that_counts_only_activities_ignores_tasks(rt):
    aid = await _deal_with_a_task_of_kind(rt, "task", ["activity"])
    await evaluate(rt, aid, CREATED + timedelta(hours=3))
    assert (await finding(rt, aid, "deal_without_task", "D1")).status == "open"
    assert await finding(rt, aid, "overdue_task", "T1") is None


async def test_an_account_that_counts_only_tasks_ignores_activities(rt):
    aid = await _deal_with_a_task_of_kind(rt, "activity", ["task"])
    await evaluate(rt, aid, CREATED + timedelta(hours=3))
    assert (await finding(rt, aid, "deal_without_task", "D1")).status == "open"
    assert await finding(rt, aid, "overdue_task", "T1") is None
