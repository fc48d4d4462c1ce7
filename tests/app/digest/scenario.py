"""A small account for the digest tests (Moscow wall clock).

The digest of Mon 9 Nov 2026 reports Fri 6 Nov (the weekend has nothing to say):
    101 Анна:  3 calls on Fri (60 s, 40 s answered, 20 s answered): 2 successful; 1 card changed
               (D1 moved on Fri); D1 won on Fri; one finding opened on Fri, one resolved on Fri.
    102 Борис: 1 call (missed); D2 lost on Fri.
Today (Mon 9 Nov): 101 has 2 open tasks due, one of them a meeting (type "2"); a task due Tue
and a completed one do not count. Critical findings open: 6, the oldest opened 1 Oct; the sixth
(newest) is not shown.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from app.accounts.models import Account
from app.calls.models import Call
from app.findings.models import Finding, FindingEvent
from app.mirror.models import Deal, Pipeline, Stage, StageHistory, Task, User
from app.plans.models import Plan
from app.rules import config as rules_config
from app.runtime import Runtime
from integrations.amocrm.demo_data import DEMO_TOKEN

MSK = ZoneInfo("Europe/Moscow")


def msk(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK).astimezone(UTC)


async def build(rt: Runtime, language: str = "ru", timezone: str = "Europe/Moscow") -> int:
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="Сводка",
            crm="amocrm",
            base_url="https://demoshop.amocrm.ru",
            key=uuid.uuid4().hex,
            timezone=timezone,
            language=language,
            auth_kind="token",
            credentials=rt.box.seal({"access_token": DEMO_TOKEN}),
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        a = account.id
        seq = iter(range(1, 1000))

        def call(manager: str, at: datetime, status: str, talk: int) -> Call:
            n = next(seq)
            return Call(
                account_id=a,
                provider="mango",
                provider_call_id=f"c{n}",
                direction="out",
                client_number=f"+7912000{n:04d}",
                manager_id=manager,
                started_at=at,
                status=status,
                talk_seconds=talk,
                is_final=True,
            )

        def deal(i: str, manager: str, stage: str, closed: datetime | None) -> Deal:
            return Deal(
                account_id=a,
                id=i,
                name=f"Сделка {i}",
                pipeline_id="P1",
                stage_id=stage,
                price=1000,
                responsible_user_id=manager,
                created_at=msk(10, 1),
                is_closed=closed is not None,
                closed_at=closed,
            )

        def task(i: str, manager: str, due: datetime, type_id: str = "1", done: bool = False) -> Task:
            return Task(
                account_id=a,
                id=i,
                deal_id="D3",
                responsible_user_id=manager,
                due_at=due,
                type_id=type_id,
                is_completed=done,
                created_at=msk(11, 1),
            )

        s.add_all(
            [
                User(account_id=a, id="101", name="Анна Петрова"),
                User(account_id=a, id="102", name="Борис Иванов"),
                Pipeline(account_id=a, id="P1", name="Продажи", sort=1),
                Stage(account_id=a, pipeline_id="P1", id="S1", name="Новая", sort=10),
                Stage(account_id=a, pipeline_id="P1", id="142", name="Успешно", sort=10000, kind="won"),
                Stage(account_id=a, pipeline_id="P1", id="143", name="Не реализовано", sort=11000, kind="lost"),
                call("101", msk(11, 6, 10), "answered", 60),
                call("101", msk(11, 6, 11), "answered", 40),
                call("101", msk(11, 6, 12), "answered", 20),
                call("102", msk(11, 6, 13), "missed", 0),
                call("101", msk(11, 5, 13), "answered", 300),  # Thursday: not in the digest
                deal("D1", "101", "142", msk(11, 6, 15)),
                deal("D2", "102", "143", msk(11, 6, 16)),
                deal("D3", "101", "S1", None),
                StageHistory(
                    account_id=a,
                    deal_id="D1",
                    pipeline_id="P1",
                    stage_id="142",
                    entered_at=msk(11, 6, 15),
                    by_user_id="101",
                ),
                task("T1", "101", msk(11, 9, 11)),
                task("T2", "101", msk(11, 9, 15), type_id="2"),
                task("T3", "101", msk(11, 10, 11)),  # tomorrow
                task("T4", "101", msk(11, 9, 12), done=True),
                Plan(account_id=a, month="2026-11", manager_id="101", won_deals=3),
            ]
        )
        findings = []
        for i in range(6):
            f = Finding(
                account_id=a,
                rule="missed_call_not_returned",
                rule_version=1,
                entity_type="deal",
                entity_id=f"m:{i}",
                deal_id="D3",
                manager_id="101",
                severity="critical",
                status="open",
                started_at=msk(10, 1 + i),
                opened_at=msk(10, 1 + i),
            )
            findings.append(f)
        warn = Finding(
            account_id=a,
            rule="overdue_task",
            rule_version=1,
            entity_type="task",
            entity_id="T9",
            deal_id="D3",
            manager_id="101",
            severity="warning",
            status="resolved",
            started_at=msk(9, 1),
            opened_at=msk(9, 1),
        )
        s.add_all([*findings, warn])
        await s.flush()
        s.add_all(
            [
                FindingEvent(
                    finding_id=findings[5].id, at=msk(11, 6, 10), from_status=None, to_status="open", actor="sweep"
                ),
                FindingEvent(
                    finding_id=warn.id, at=msk(11, 6, 11), from_status="open", to_status="resolved", actor="sweep"
                ),
            ]
        )
        doc = rules_config.RulesDocument.model_validate(
            {"plans": {"milestones": {"meeting_held": {"task_types": ["2"]}}}}
        )
        await rules_config.save(s, a, doc)
    return a
