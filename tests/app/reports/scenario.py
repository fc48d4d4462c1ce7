"""A hand-computed week of a small team, for the report tests (all times Moscow wall-clock).

The week is Mon 2 Nov - Fri 6 Nov 2026; Wed 4 Nov is a public holiday in Russia (Unity Day), so
the working days are 2, 3, 5 and 6 Nov, 09:00-18:00 (9 hours). "Now" is Fri 6 Nov 12:00.

Managers (CRM user ids): 101 Анна Петрова (u1), 102 Борис Иванов (u2), 103 Вера Смирнова (u3) (no calls at all).
Expected figures are written next to the rows that make them, and asserted in test_reports.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from app.accounts.models import Account
from app.calls.models import Call
from app.findings.models import Finding, FindingEvent
from app.mirror.models import Deal, DealContact, Note, Pipeline, Stage, StageHistory, Task, User
from app.runtime import Runtime

MOSCOW = ZoneInfo("Europe/Moscow")
DAY_FROM, DAY_TO = date(2026, 11, 2), date(2026, 11, 6)


def msk(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MOSCOW).astimezone(UTC)


NOW = msk(11, 6, 12)
_seq = iter(range(1, 10_000))


def call(
    account_id: int,
    manager: str,
    at: datetime,
    direction: str,
    status: str,
    talk: int,
    *,
    final: bool = True,
    provider: str = "mango",
) -> Call:
    n = next(_seq)
    return Call(
        account_id=account_id,
        provider=provider,
        provider_call_id=f"c{n}",
        direction=direction,
        client_number=f"+7912000{n:04d}",
        manager_id=manager,
        started_at=at,
        status=status,
        talk_seconds=talk,
        is_final=final,
    )


async def build(rt: Runtime, crm: str = "amocrm", base_url: str | None = None) -> int:
    base = base_url or ("https://demoshop.amocrm.ru" if crm == "amocrm" else "https://demoshop.bitrix24.ru/rest/1/x/")
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="Отчёты",
            crm=crm,
            base_url=base,
            key=uuid.uuid4().hex,
            timezone="Europe/Moscow",
            auth_kind="token",
            credentials=rt.box.seal({"access_token": "unused"}),
            sync_counts={},
        )
        s.add(account)
        await s.flush()
        a = account.id
        s.add_all(
            [
                User(account_id=a, id="101", name="Анна Петрова"),
                User(account_id=a, id="102", name="Борис Иванов"),
                User(account_id=a, id="103", name="Вера Смирнова"),
                Pipeline(account_id=a, id="P1", name="Продажи", sort=1),
                Stage(account_id=a, pipeline_id="P1", id="S1", name="Новая", sort=10),
                Stage(account_id=a, pipeline_id="P1", id="S2", name="Переговоры", sort=20),
                Stage(account_id=a, pipeline_id="P1", id="S3", name="Договор", sort=30),
                Stage(account_id=a, pipeline_id="P1", id="142", name="Успешно", sort=10000, kind="won"),
                Stage(
                    account_id=a, pipeline_id="P1", id="143", name="Закрыто и не реализовано", sort=11000, kind="lost"
                ),
            ]
        )
        # -- calls ------------------------------------------------------------------------------
        # 101: 4 calls in the week: talk 60+30+45 = 135 s, successful 2 (60, 45), in 2, out 2, missed 1.
        s.add_all(
            [
                call(a, "101", msk(11, 2, 10), "out", "answered", 60),
                call(a, "101", msk(11, 2, 11), "in", "answered", 30),
                call(a, "101", msk(11, 2, 12), "in", "missed", 0),
                # 23:30 Moscow is 20:30 UTC: still Monday the 2nd.
                call(a, "101", msk(11, 2, 23, 30), "out", "answered", 45, provider="amocrm_backfill"),
                # 00:30 Moscow on Sat 7 Nov is 21:30 UTC on Fri 6 Nov: outside the week.
                call(a, "101", msk(11, 7, 0, 30), "out", "answered", 100),
                # u2: one call of exactly 40 s (successful); an internal call and an unfinished one don't count.
                call(a, "102", msk(11, 3, 9), "out", "answered", 40),
                call(a, "102", msk(11, 3, 10), "internal", "answered", 300),
                call(a, "102", msk(11, 3, 11), "out", "answered", 90, final=False),
            ]
        )

        # -- deals, stage history ------------------------------------------------------------------
        def deal(
            i: str,
            manager: str,
            stage: str,
            price: float,
            created: datetime,
            entered: datetime,
            closed: datetime | None = None,
        ) -> Deal:
            return Deal(
                account_id=a,
                id=i,
                name=f"Сделка {i}",
                pipeline_id="P1",
                stage_id=stage,
                price=price,
                responsible_user_id=manager,
                created_at=created,
                stage_entered_at=entered,
                stage_entered_source="event",
                is_closed=closed is not None,
                closed_at=closed,
            )

        def moved(i: str, stage: str, at: datetime, by: str | None) -> StageHistory:
            return StageHistory(account_id=a, deal_id=i, pipeline_id="P1", stage_id=stage, entered_at=at, by_user_id=by)

        s.add_all(
            [
                # D1 (u1) moved back a stage: S1 Mon 09:00, S2 Tue 09:00, back to S1 Thu 09:00, S2 again Thu 13:30.
                # S1: 1 day + 0.5 day = 1.5; S2: Tue (Wed is a holiday) 1 day + Thu 13:30-Fri 12:00 (7.5 h) = 1.8333.
                deal("D1", "101", "S2", 100, msk(11, 2, 9), msk(11, 5, 13, 30)),
                moved("D1", "S1", msk(11, 2, 9), "101"),
                moved("D1", "S2", msk(11, 3, 9), "101"),
                moved("D1", "S1", msk(11, 5, 9), "101"),
                moved("D1", "S2", msk(11, 5, 13, 30), "101"),
                # D2 (u1): open in S1 since October: no stay begins in the week.
                deal("D2", "101", "S1", 200, msk(10, 1, 9), msk(10, 1, 9)),
                # D3 (u2): open in S1 since Fri 09:00 with no history: 3 h = 0.3333 day.
                deal("D3", "102", "S1", 300, msk(11, 6, 9), msk(11, 6, 9)),
                # D4 (u1) won: S1 Mon 09:00 (0.5 day), S3 Mon 13:30 (0.5 day), won Tue 09:00. Created-closed: 1 day.
                deal("D4", "101", "142", 1000, msk(11, 2, 9), msk(11, 3, 9), closed=msk(11, 3, 9)),
                moved("D4", "S1", msk(11, 2, 9), "101"),
                moved("D4", "S3", msk(11, 2, 13, 30), "101"),
                moved("D4", "142", msk(11, 3, 9), "101"),
                # D5 (u1) won and re-opened: S1 Mon 09:00 (1 day + 3 h = 1.3333), won Tue 12:00, re-opened to
                # S3 Thu 09:00 (until Fri 12:00: 1.3333). Open now, so neither won nor closed.
                deal("D5", "101", "S3", 700, msk(11, 2, 9), msk(11, 5, 9)),
                moved("D5", "S1", msk(11, 2, 9), "101"),
                moved("D5", "142", msk(11, 3, 12), "101"),
                moved("D5", "S3", msk(11, 5, 9), "101"),
                # D6 (u2) lost, a returning client (C1 bought D4 before): S1 Mon 10:00 - Thu 18:00 = 8+9+9 h = 2.8889.
                deal("D6", "102", "143", 500, msk(11, 2, 10), msk(11, 5, 18), closed=msk(11, 5, 18)),
                # (moved by an automation, not by u2: no card change of hers)
                moved("D6", "S1", msk(11, 2, 10), None),
                moved("D6", "143", msk(11, 5, 18), None),
                DealContact(account_id=a, deal_id="D4", contact_id="C1"),
                DealContact(account_id=a, deal_id="D6", contact_id="C1"),
            ]
        )
        # -- card changes --------------------------------------------------------------------------
        # 101: Mon D1 (note, stage), D2 (task set and closed), D4, D5 (stages) = 4; Tue D1 (note, stage),
        # D4, D5 (won) = 3; Thu D1, D5 (stages) = 2; 9 in the week. u2: none (D6 moved by automation).
        s.add_all(
            [
                Note(
                    account_id=a,
                    id="N1",
                    entity_type="lead",
                    entity_id="D1",
                    deal_id="D1",
                    kind="common",
                    text="Обсудили условия поставки",
                    created_by="101",
                    created_at=msk(11, 2, 10, 5),
                    params={},
                ),
                Note(
                    account_id=a,
                    id="N2",
                    entity_type="lead",
                    entity_id="D1",
                    deal_id="D1",
                    kind="common",
                    text="Клиент просит скидку 5 %",
                    created_by="101",
                    created_at=msk(11, 3, 10),
                    params={},
                ),
                # A call note is not written by the manager: it does not count.
                Note(
                    account_id=a,
                    id="N3",
                    entity_type="lead",
                    entity_id="D3",
                    deal_id="D3",
                    kind="call_out",
                    text=None,
                    created_by="102",
                    created_at=msk(11, 3, 9, 5),
                    params={},
                ),
                Task(
                    account_id=a,
                    id="T1",
                    deal_id="D1",
                    responsible_user_id="101",
                    created_by="101",
                    created_at=msk(10, 30, 10),
                    due_at=msk(11, 5, 10),
                    is_completed=False,
                ),
                Task(
                    account_id=a,
                    id="T2",
                    deal_id="D2",
                    responsible_user_id="101",
                    created_by="101",
                    created_at=msk(11, 2, 14),
                    due_at=msk(11, 2, 15),
                    is_completed=True,
                    completed_at=msk(11, 2, 16),
                ),
                Task(
                    account_id=a,
                    id="T3",
                    deal_id="D3",
                    responsible_user_id="102",
                    created_by="102",
                    created_at=msk(10, 30, 10),
                    due_at=msk(11, 10, 10),
                    is_completed=False,
                ),
            ]
        )

        # -- findings ---------------------------------------------------------------------------------
        def finding(rule: str, deal_id: str, manager: str, status: str, opened: datetime | None) -> Finding:
            return Finding(
                account_id=a,
                rule=rule,
                rule_version=1,
                entity_type="deal",
                entity_id=f"{rule}:{deal_id}",
                deal_id=deal_id,
                manager_id=manager,
                severity="warning",
                status=status,
                started_at=opened or msk(11, 6, 11),
                opened_at=opened,
            )

        f_overdue = finding("overdue_task", "D1", "101", "open", msk(10, 30, 12))
        f_without = finding("deal_without_task", "D2", "101", "acknowledged", msk(11, 2, 17))
        f_stuck = finding("stuck_stage", "D3", "102", "open", msk(11, 3, 12))
        f_gone = finding("empty_comment", "D1", "101", "resolved", msk(11, 2, 11))
        f_pending = finding("stuck_stage", "D1", "101", "pending", None)
        s.add_all([f_overdue, f_without, f_stuck, f_gone, f_pending])
        await s.flush()

        def ev(f: Finding, at: datetime, frm: str | None, to: str) -> FindingEvent:
            return FindingEvent(finding_id=f.id, at=at, from_status=frm, to_status=to, actor="sweep")

        s.add_all(
            [
                ev(f_overdue, msk(10, 30, 12), None, "open"),  # before the week: the baseline
                ev(f_without, msk(11, 2, 17), None, "open"),  # Mon +1
                ev(f_without, msk(11, 3, 10), "open", "acknowledged"),  # no change in the count
                ev(f_stuck, msk(11, 3, 12), None, "pending"),
                ev(f_stuck, msk(11, 3, 12, 30), "pending", "open"),  # Tue +1
                ev(f_gone, msk(11, 2, 11), None, "open"),  # Mon +1
                ev(f_gone, msk(11, 5, 23, 30), "open", "resolved"),  # Thu -1 (23:30 Moscow: still Thu)
                ev(f_pending, msk(11, 6, 11), None, "pending"),  # not opened: no change
            ]
        )
    return a
