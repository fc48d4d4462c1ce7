"""ABC/XYZ of clients against hand-computed figures, on both databases.

The period is Aug 1 - Oct 31 2026 (92 days, three months); the previous period of equal length
is May 1 - Jul 31 2026. Revenue of won deals in the period, per client (Moscow local months):

    client  Aug  Sep  Oct   total  share before  ABC  monthly CV                         XYZ
    C1      200  200  200     600      0 %        A   0 %                                 X
    C2       60   50   40     150     60 %        A   sqrt(200/3)/50 = 16.33 %            Y
    C3      100   50    -     150     75 %        A   sqrt(5000/3)/50 = 81.65 %           Z
    C4        -   80    -      80     90 %        B   one purchase                        Z
    C5        -    -   20      20     98 %        C   one purchase                        Z
                            1000

C2 and C3 tie at 150: the lower id comes first. The previous period: C4 500 (A, one purchase: Z),
C1 100 (500 of 600 = 83 % before it: B, Z). So C1 moved BZ → AX and C4 AZ → BZ; C2, C3, C5 are new.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.accounts.models import Account
from app.mirror.models import Company, Contact, Deal, DealContact, Pipeline, Stage, User
from app.reports import abcxyz
from app.reports.periods import Period
from app.rules.config import AbcXyzIn
from app.runtime import Runtime
from tests.conftest import ADMIN_TOKEN

MSK = ZoneInfo("Europe/Moscow")


def msk(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MSK).astimezone(UTC)


async def build(rt: Runtime, account_id: int | None = None) -> int:
    """The clients above; into an existing account (with users 101, 102 and pipeline P1 with stages
    S1, 142, 143) when `account_id` is given."""
    async with rt.sessions() as s, s.begin():
        if account_id is None:
            account = Account(
                name="ABC",
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
                    Pipeline(account_id=a, id="P1", name="Продажи", sort=1),
                    Stage(account_id=a, pipeline_id="P1", id="S1", name="Новая", sort=10),
                    Stage(account_id=a, pipeline_id="P1", id="142", name="Успешно", sort=10000, kind="won"),
                    Stage(account_id=a, pipeline_id="P1", id="143", name="Не реализовано", sort=11000, kind="lost"),
                ]
            )
        a = account_id or a
        s.add_all(
            [
                Contact(account_id=a, id="C1", name="ООО Ромашка", responsible_user_id="101"),
                Contact(account_id=a, id="C2", name="ИП Сидоров", responsible_user_id="102"),
                # C3 has no card in the mirror: its manager is whoever sold it the most (102).
                Contact(account_id=a, id="C4", name="АО Вектор", responsible_user_id="101"),
                Contact(account_id=a, id="C5", name="Иван Кузнецов", responsible_user_id="102"),
                # By company: C1's and C2's deals are K1's, C4's K2's (no card in the mirror).
                Company(account_id=a, id="K1", name="ООО Альфа", responsible_user_id="102"),
            ]
        )
        seq = iter(range(1, 1000))

        def deal(client: str | list[str], price: float, closed: datetime | None, stage: str = "142") -> None:
            i = f"D{next(seq)}"
            s.add(
                Deal(
                    account_id=a,
                    id=i,
                    name=i,
                    pipeline_id="P1",
                    stage_id=stage,
                    price=price,
                    responsible_user_id="101" if client in ("C1", "C4") else "102",
                    company_id={"C1": "K1", "C2": "K1", "C4": "K2"}.get(client if isinstance(client, str) else ""),
                    created_at=msk(4, 1),
                    is_closed=closed is not None,
                    closed_at=closed,
                )
            )
            for c in [client] if isinstance(client, str) else client:
                s.add(DealContact(account_id=a, deal_id=i, contact_id=c))

        # 00:30 Moscow on Aug 1 is Jul 31 in UTC: it is August's.
        deal("C1", 200, msk(8, 1, 0, 30))
        deal("C1", 120, msk(9, 3))
        deal("C1", 80, msk(9, 20))
        # 22:30 Moscow on Oct 31 is in the period; 00:30 on Nov 1 (Oct 31 in UTC) is not.
        deal("C1", 200, msk(10, 31, 22, 30))
        deal("C1", 999, msk(11, 1, 0, 30))
        deal("C1", 5000, msk(9, 10), stage="143")  # lost: no revenue
        deal("C1", 7000, None, stage="S1")  # open: no revenue
        deal("C2", 60, msk(8, 5))
        deal("C2", 50, msk(9, 5))
        deal("C2", 40, msk(10, 5))
        deal("C3", 100, msk(8, 7))
        deal("C3", 50, msk(9, 7))
        deal("C4", 80, msk(9, 9))
        # Two contacts on one deal: the revenue goes to one client only (the lowest id, C5).
        deal(["C9", "C5"], 20, msk(10, 10))
        # The previous period.
        deal("C4", 500, msk(7, 15))
        deal("C1", 100, msk(7, 20))
        deal("C2", 10_000, msk(4, 30))  # before the previous period: nowhere
    return a


PERIOD = Period(date(2026, 8, 1), date(2026, 10, 31), "Europe/Moscow")


async def _report(rt: Runtime, aid: int, scope: abcxyz.Scope | None = None) -> dict:
    async with rt.reads() as s:
        account = await s.get(Account, aid)
        return await abcxyz.report(s, account, PERIOD, scope or abcxyz.Scope())


async def test_groups_matrix_and_movement(rt: Runtime) -> None:
    aid = await build(rt)
    r = await _report(rt, aid)
    got = [(i["client_id"], i["revenue"], i["abc"], i["xyz"], i["cv"], i["purchases"]) for i in r["items"]]
    assert got == [
        ("C1", 600.0, "A", "X", 0.0, 4),
        ("C2", 150.0, "A", "Y", 16.33, 3),
        ("C3", 150.0, "A", "Z", 81.65, 2),
        ("C4", 80.0, "B", "Z", None, 1),
        ("C5", 20.0, "C", "Z", None, 1),
    ]
    assert [i["name"] for i in r["items"]] == ["ООО Ромашка", "ИП Сидоров", None, "АО Вектор", "Иван Кузнецов"]
    assert [i["manager_id"] for i in r["items"]] == ["101", "102", "102", "101", "102"]
    assert set(r["matrix"]) == {"AX", "AY", "AZ", "BX", "BY", "BZ", "CX", "CY", "CZ"}
    filled = {g: (v["clients"], v["revenue"]) for g, v in r["matrix"].items() if v["clients"]}
    assert filled == {"AX": (1, 600.0), "AY": (1, 150.0), "AZ": (1, 150.0), "BZ": (1, 80.0), "CZ": (1, 20.0)}
    assert r["total_revenue"] == 1000.0
    per = {m["manager_id"]: {g: v["clients"] for g, v in m["matrix"].items() if v["clients"]} for m in r["by_manager"]}
    assert per == {"101": {"AX": 1, "BZ": 1}, "102": {"AY": 1, "AZ": 1, "CZ": 1}}
    assert (r["previous"]["from"], r["previous"]["to"]) == (date(2026, 5, 1), date(2026, 7, 31))
    prev = {g: (v["clients"], v["revenue"]) for g, v in r["previous"]["matrix"].items() if v["clients"]}
    assert prev == {"AZ": (1, 500.0), "BZ": (1, 100.0)}
    assert [(m["client_id"], m["from"], m["to"]) for m in r["movement"]] == [("C1", "BZ", "AX"), ("C4", "AZ", "BZ")]
    assert (r["new_clients"], r["lost_clients"]) == (3, 0)


async def test_a_manager_sees_only_their_clients(rt: Runtime) -> None:
    aid = await build(rt)
    r = await _report(rt, aid, abcxyz.Scope(("101",)))
    # The groups are the team's: C4 stays B though it is the manager's second client.
    assert [(i["client_id"], i["abc"] + i["xyz"]) for i in r["items"]] == [("C1", "AX"), ("C4", "BZ")]
    assert [m["manager_id"] for m in r["by_manager"]] == ["101"]


async def test_thresholds_come_from_the_rules_document(client: httpx.AsyncClient, rt: Runtime) -> None:
    aid = await build(rt)
    # A: top 50 %; X up to 20 %: C2 (16.33 %) turns X, C2 (before: 60 %) turns B.
    put = await client.patch(
        f"/api/accounts/{aid}/rules",
        json={"abcxyz": {"a_share": 50, "b_share": 45, "x_cv": 20}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert put.status_code == 200, put.text
    resp = await client.get(f"/api/accounts/{aid}/reports/abcxyz", params={"from": "2026-08-01", "to": "2026-10-31"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [i["abc"] + i["xyz"] for i in body["items"]] == ["AX", "BX", "BZ", "BZ", "CZ"]
    assert body["thresholds"] == {"a_share": 50.0, "b_share": 45.0, "x_cv": 20.0, "y_cv": 25.0}
    assert set(body["items"][0]) >= {"client_id", "name", "revenue", "abc", "xyz"}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-10-31", "to": "2026-08-01"},
        {"from": "2026-08-01"},
        {"from": "2025-01-01", "to": "2026-10-31"},
        {"from": "2026-08-01", "to": "2026-10-31", "by": "deal"},
        {"from": "2026-08-01", "to": "2026-10-31", "limit": "0"},
    ],
)
async def test_bad_parameters_are_422(client: httpx.AsyncClient, rt: Runtime, params: dict) -> None:
    aid = await build(rt)
    resp = await client.get(f"/api/accounts/{aid}/reports/abcxyz", params=params)
    assert resp.status_code == 422, resp.text


async def test_unknown_account_and_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/accounts/999/reports/abcxyz")).status_code == 404
    resp = await client.get("/api/accounts/999/reports/abcxyz", headers={"Authorization": "Bearer x" + ADMIN_TOKEN})
    assert resp.status_code == 401


async def test_by_company(client: httpx.AsyncClient, rt: Runtime) -> None:
    """K1 = C1 + C2: Aug 260, Sep 250, Oct 240 = 750, CV sqrt(200/3)/250 = 3.27 % (X), A; K2 = C4's one
    deal of 80: 750 of 830 = 90.4 % before it, B, Z. Before: K2 500 (AZ), K1 100 (BZ). Deals with no
    company are nobody's here."""
    aid = await build(rt)
    resp = await client.get(
        f"/api/accounts/{aid}/reports/abcxyz", params={"from": "2026-08-01", "to": "2026-10-31", "by": "company"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    got = [
        (i["client_id"], i["name"], i["revenue"], i["abc"] + i["xyz"], i["cv"], i["manager_id"]) for i in body["items"]
    ]
    assert got == [("K1", "ООО Альфа", 750.0, "AX", 3.27, "102"), ("K2", None, 80.0, "BZ", None, "101")]
    assert body["by"] == "company"
    assert [(m["client_id"], m["from"], m["to"]) for m in body["movement"]] == [("K1", "BZ", "AX"), ("K2", "AZ", "BZ")]
    # The rules document may make companies the default.
    await client.patch(
        f"/api/accounts/{aid}/rules",
        json={"abcxyz": {"clients": "company"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    again = await client.get(f"/api/accounts/{aid}/reports/abcxyz", params={"from": "2026-08-01", "to": "2026-10-31"})
    assert [i["client_id"] for i in again.json()["items"]] == ["K1", "K2"]


def test_classification_boundaries() -> None:
    t = AbcXyzIn()
    # 90 and 110: mean 100, deviation 10: exactly 10 % is X.
    assert abcxyz.xyz_of(abcxyz.coefficient_of_variation([90, 110]), 2, t) == "X"
    # 75 and 125: exactly 25 % is Y; 74 and 126 is Z.
    assert abcxyz.xyz_of(abcxyz.coefficient_of_variation([75, 125]), 2, t) == "Y"
    assert abcxyz.xyz_of(abcxyz.coefficient_of_variation([74, 126]), 2, t) == "Z"
    # Two purchases in one month of a one-month period: no variation at all, X; one purchase: Z.
    assert abcxyz.xyz_of(abcxyz.coefficient_of_variation([300]), 2, t) == "X"
    assert abcxyz.xyz_of(abcxyz.coefficient_of_variation([300]), 1, t) == "Z"
    assert abcxyz.months_of(date(2026, 11, 15), date(2027, 2, 1)) == ["2026-11", "2026-12", "2027-01", "2027-02"]
    # The largest client is A even when it alone holds more than 80 %.
    clients = {k: abcxyz.Client(k, revenue=v, purchases=1) for k, v in {"a": 900, "b": 60, "c": 40}.items()}
    assert [(c.client_id, c.abc) for c in abcxyz.rank(clients, ["2026-11"], t)] == [("a", "A"), ("b", "B"), ("c", "C")]
