"""Targets counted back from the plan, and the pace, against hand-computed figures (both databases).

Milestones: first contact = a call of at least 40 s; meeting held = a completed task of type "2";
proposal sent = entering stage P1/S3. The month is November 2026: 20 working days in Russia (Nov 4
is a holiday). "Now" is Mon 16 Nov 12:00 Moscow: 9 working days and 3 of 9 hours behind, so the
elapsed share is 9.3333 / 20 = 0.46667.

History (the 90 days before Nov 1; everything below is in October):
    101 Анна:  48 first contacts, 24 meetings, 12 proposals, 4 won (100 000 each)
    102 Борис:  4 first contacts,  2 meetings,  1 proposal,  0 won
    team:      52 first contacts, 26 meetings, 13 proposals, 4 won
Plans and targets:
    101: 3 won. Own conversions (enough history): 1 win per 3 proposals → 9 proposals; 1 proposal
         per 2 meetings → 18 meetings (about 5 a week: 18 × 5 / 20 = 4.5); 1 meeting per 2 first
         contacts → 36 first contacts. The issue's worked example.
    102: 2 won and 500 000. Too little history (1 proposal, 2 meetings, 4 contacts < 5): the team's
         conversions: 2 × 13 / 4 = 6.5 → 7 proposals; 14 meetings; 28 first contacts.
    103: revenue 300 000 only: at the team's average won deal (100 000) 3 won; 10 proposals
         (9.75 up), 20 meetings, 40 first contacts.
November so far, 101: 11 first contacts, 6 meetings, 5 proposals, 1 won. Expected by now: 16.8,
8.4, 4.2, 1.4: behind on contacts (34.5 %), meetings (28.6 %) and won (28.6 %), not on proposals.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx

from app.accounts.models import Account
from app.calls.models import Call
from app.mirror.models import Deal, Pipeline, Stage, StageHistory, Task, User
from app.plans import repository, service
from app.plans.models import Plan
from app.rules import config as rules_config
from app.runtime import Runtime

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 16, 12, tzinfo=MSK).astimezone(UTC)


def msk(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=MSK).astimezone(UTC)


async def build(rt: Runtime) -> int:
    async with rt.sessions() as s, s.begin():
        account = Account(
            name="План",
            crm="amocrm",
            base_url="https://demoshop.amocrm.ru",
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
                Stage(account_id=a, pipeline_id="P1", id="S3", name="КП отправлено", sort=30),
                Stage(account_id=a, pipeline_id="P1", id="142", name="Успешно", sort=10000, kind="won"),
                Plan(account_id=a, month="2026-11", manager_id="101", won_deals=3),
                Plan(account_id=a, month="2026-11", manager_id="102", won_deals=2, revenue=500_000),
                Plan(account_id=a, month="2026-11", manager_id="103", revenue=300_000),
                Plan(account_id=a, month="2026-12", manager_id="101", won_deals=99),
            ]
        )
        seq = iter(range(1, 10_000))

        def deal(i: str, manager: str, *, meeting: datetime, proposal: datetime | None, won: datetime | None) -> None:
            s.add(
                Deal(
                    account_id=a,
                    id=i,
                    name=i,
                    pipeline_id="P1",
                    stage_id="142" if won else ("S3" if proposal else "S1"),
                    price=100_000 if won and won < msk(11, 1) else 120_000,
                    responsible_user_id=manager,
                    created_at=msk(9, 1),
                    is_closed=won is not None,
                    closed_at=won,
                )
            )
            s.add(
                Task(
                    account_id=a,
                    id=f"T{next(seq)}",
                    deal_id=i,
                    type_id="2",
                    responsible_user_id=manager,
                    is_completed=True,
                    completed_at=meeting,
                    created_at=meeting,
                )
            )
            if proposal:
                s.add(StageHistory(account_id=a, deal_id=i, pipeline_id="P1", stage_id="S3", entered_at=proposal))
            if won:
                s.add(StageHistory(account_id=a, deal_id=i, pipeline_id="P1", stage_id="142", entered_at=won))

        def talk(manager: str, at: datetime, seconds: int, deal_id: str | None = None, direction: str = "out") -> None:
            n = next(seq)
            s.add(
                Call(
                    account_id=a,
                    provider="mango",
                    provider_call_id=f"c{n}",
                    direction=direction,
                    client_number=f"+7912{n:07d}",
                    manager_id=manager,
                    started_at=at,
                    status="answered",
                    talk_seconds=seconds,
                    is_final=True,
                    deal_id=deal_id,
                )
            )

        for i in range(24):  # 101's October
            deal(
                f"H{i}",
                "101",
                meeting=msk(10, 5 + i % 20),
                proposal=msk(10, 6 + i % 20) if i < 12 else None,
                won=msk(10, 28) if i < 4 else None,
            )
        for _ in range(48):
            talk("101", msk(10, 10), 60)
        deal("K1", "102", meeting=msk(10, 7), proposal=msk(10, 8), won=None)
        deal("K2", "102", meeting=msk(10, 9), proposal=None, won=None)
        for _ in range(4):
            talk("102", msk(10, 12), 45)
        # Before the history window (Aug 2): counts nowhere.
        deal("OLD", "102", meeting=msk(8, 2), proposal=msk(8, 2), won=msk(8, 2))

        # 101's November so far: 6 meetings, 5 proposals (F0..F4), 1 won (F0).
        for i in range(6):
            deal(
                f"F{i}",
                "101",
                meeting=msk(11, 3 + i),
                proposal=msk(11, 9) if i < 5 else None,
                won=msk(11, 10) if i == 0 else None,
            )
        for _ in range(10):
            talk("101", msk(11, 12), 40)  # exactly 40 s counts
        talk("101", msk(11, 12), 90, deal_id="F0")
        talk("101", msk(11, 12), 120, deal_id="F0")  # the same deal again: once
        talk("101", msk(11, 12), 39)  # too short
        talk("101", msk(11, 12), 300, direction="internal")
        # December's: not November's.
        talk("101", msk(12, 1), 60)
        await rules_config.save(
            s,
            a,
            rules_config.RulesDocument.model_validate(
                {
                    "plans": {
                        "milestones": {
                            "first_contact": {"calls": True},
                            "meeting_held": {"task_types": ["2"]},
                            "proposal_sent": {"stages": ["P1/S3"]},
                        }
                    }
                }
            ),
        )
    return a


def _rows(manager: dict) -> dict[str, tuple]:
    return {
        r["milestone"]: (r["target"], r["per_week"], r["fact"], r["expected"], r["behind"], r["behind_percent"])
        for r in manager["rows"]
    }


async def test_worked_example_targets_and_pace(rt: Runtime) -> None:
    aid = await build(rt)
    async with rt.reads() as s:
        account = await s.get(Account, aid)
        report = await service.pace(s, account, "2026-11", NOW)
    assert report["working_days"] == 20
    assert report["elapsed_share"] == 0.4667 and report["working_days_elapsed"] == 9.33
    assert report["milestones"] == ["won_deals", "proposal_sent", "meeting_held", "first_contact"]
    people = {m["manager_id"]: m for m in report["managers"]}
    assert list(people) == ["101", "102", "103"]

    anna = people["101"]
    assert [(c["from"], c["to"], c["rate"], c["source"]) for c in anna["conversions"]] == [
        ("proposal_sent", "won_deals", 0.3333, "own"),
        ("meeting_held", "proposal_sent", 0.5, "own"),
        ("first_contact", "meeting_held", 0.5, "own"),
    ]
    assert _rows(anna) == {
        "won_deals": (3, 1, 1, 1.4, True, 28.6),
        "proposal_sent": (9, 3, 5, 4.2, False, 0.0),
        "meeting_held": (18, 5, 6, 8.4, True, 28.6),
        "first_contact": (36, 9, 11, 16.8, True, 34.5),
    }
    assert anna["behind"] is True

    boris = people["102"]
    assert {c["source"] for c in boris["conversions"]} == {"team"}
    rows = _rows(boris)
    assert [rows[k][0] for k in ("won_deals", "proposal_sent", "meeting_held", "first_contact")] == [2, 7, 14, 28]
    assert rows["revenue"] == (500_000, None, 0, 233333.33, True, 100.0)

    vera = people["103"]
    assert vera["avg_deal"] == {"value": 100000.0, "source": "team"}
    rows = _rows(vera)
    assert [rows[k][0] for k in ("won_deals", "proposal_sent", "meeting_held", "first_contact")] == [3, 10, 20, 40]


async def test_stage_milestones_in_one_pass_keep_each_milestone_and_pipeline(rt: Runtime) -> None:
    """The stage milestones are counted in one pass over the moves: a stage two milestones name counts
    for both (and once per deal with the milestone's other signs), a move that does not say its
    pipeline is the deal's, and the same stage id in another pipeline is not the milestone."""
    aid = await build(rt)
    async with rt.sessions() as s, s.begin():
        s.add_all(
            [
                # F5 has no proposal yet: a move in another pipeline's "S3" is not one...
                StageHistory(account_id=aid, deal_id="F5", pipeline_id="P2", stage_id="S3", entered_at=msk(11, 11)),
                # ...and a move that names no pipeline is in the deal's (P1): F5's proposal.
                StageHistory(account_id=aid, deal_id="F5", pipeline_id=None, stage_id="S3", entered_at=msk(11, 12)),
            ]
        )
    cfg = rules_config.PlansIn.model_validate(
        {
            "milestones": {
                "meeting_held": {"task_types": ["2"], "stages": ["P1/S3"]},
                "proposal_sent": {"stages": ["P1/S3"]},
                # Calls and a stage: a deal called and moved counts once; a number called, once.
                "first_contact": {"calls": True, "stages": ["P1/S3"]},
            }
        }
    )
    month = service.month_of("2026-11", "Europe/Moscow")
    async with rt.reads() as s:
        counts = await repository.milestone_counts(s, aid, cfg, msk(10, 1, 0), month.start, month.end)
    # November, 101: meetings F0..F5 by task, F0..F5 by stage too: 6 deals; proposals F0..F5: 6.
    assert counts[(1, "101", "meeting_held")] == 6
    assert counts[(1, "101", "proposal_sent")] == 6
    # October, 101: 24 meetings by task (H0..H23), of which H0..H11 also by stage; 12 proposals.
    assert counts[(0, "101", "meeting_held")] == 24
    assert counts[(0, "101", "proposal_sent")] == 12
    # November, 101: ten numbers called (no deal) and F0 called twice; F0..F5 moved to S3: 10 + 6.
    assert counts[(1, "101", "first_contact")] == 16
    # 102: K1 met and proposed, K2 only met.
    assert counts[(0, "102", "meeting_held")] == 2 and counts[(0, "102", "proposal_sent")] == 1


def test_the_issue_worked_example_as_arithmetic() -> None:
    steps = [
        ("proposal_sent", service.Conversion(1 / 3, "own", 1, 3)),
        ("meeting_held", service.Conversion(1 / 2, "own", 1, 2)),
    ]
    assert service.walk_back(3, steps) == {"proposal_sent": 9, "meeting_held": 18}
    assert service.per_week(18, 20) == 5
    # Too little history: the team's conversion; none at all: no target.
    assert service.conversion((1, 2), (4, 12), 5).source == "team"
    assert service.conversion((0, 0), (0, 0), 5).rate is None
    assert service.walk_back(3, [("proposal_sent", service.Conversion(None, "none", 0, 0))]) == {"proposal_sent": None}


async def test_plan_report_endpoint(client: httpx.AsyncClient, rt: Runtime) -> None:
    aid = await build(rt)
    resp = await client.get(f"/api/accounts/{aid}/reports/plan", params={"month": "2026-11"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["month"] == "2026-11" and [m["manager_id"] for m in body["managers"]] == ["101", "102", "103"]
    assert (await client.get(f"/api/accounts/{aid}/reports/plan", params={"month": "2026-13"})).status_code == 422
    assert (await client.get("/api/accounts/999/reports/plan", params={"month": "2026-11"})).status_code == 404


async def test_milestones_are_checked_in_the_rules_document(client: httpx.AsyncClient, rt: Runtime) -> None:
    aid = await build(rt)
    bad = await client.patch(
        f"/api/accounts/{aid}/rules",
        json={"plans": {"milestones": {"demo_done": {"calls": True}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert bad.status_code == 422 and "demo_done" in bad.text
    bad = await client.patch(
        f"/api/accounts/{aid}/rules",
        json={"plans": {"milestones": {"proposal_sent": {"stages": ["S3"]}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert bad.status_code == 422
    ok = await client.patch(
        f"/api/accounts/{aid}/rules",
        json={"plans": {"milestones": {"proposal_sent": {"stages": ["P1/S9"]}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert ok.status_code == 200 and any("P1/S9" in w for w in ok.json()["warnings"])
