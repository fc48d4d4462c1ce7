"""Speed to lead in the managers report: `first_contact_median_minutes`, working minutes from a
deal's creation to its first contact, the median over the deals created in the period.

The week Mon 8 - Sun 14 Dec 2025 has no holidays in Russia; working hours 09:00-18:00 Moscow.
Every figure below is worked out by hand next to the deal that makes it."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from app.mirror.models import ContactPhone, DealContact, User
from tests.app.rules.mirror_builder import MANAGER, OTHER_MANAGER, add_deal, add_note, msk, new_account
from tests.app.rules.test_call_rules import add_call

NOW = msk(2025, 12, 15, 12)
WEEK = {"from": "2025-12-08", "to": "2025-12-14"}
_n = iter(range(10, 100))


def _deal(s, aid: int, deal_id: str, created: datetime, manager: str = MANAGER, **kw) -> str:
    """A deal with a contact of its own number; returns the number."""
    number = f"+799900000{next(_n)}"
    add_deal(s, aid, deal_id, created_at=created, responsible_user_id=manager, **kw)
    s.add(DealContact(account_id=aid, deal_id=deal_id, contact_id=f"C{deal_id}"))
    s.add(ContactPhone(account_id=aid, contact_id=f"C{deal_id}", phone=number))
    return number


def _call(s, aid: int, number: str, started: datetime, **kw) -> None:
    add_call(s, aid, started=started, number=number, **{"deal_id": None, "contact_id": None, **kw})


async def test_first_contact_median_minutes(rt, client):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        s.add(User(account_id=aid, id="u3", name="Вера Смирнова"))  # no deals: null
        # u1: 12, 30, 0, 90 (and one never contacted) → sorted 0, 12, 30, 90 → median 21.0
        n = _deal(s, aid, "D1", msk(2025, 12, 8, 10))
        _call(s, aid, n, msk(2025, 12, 8, 10, 12), status="missed")  # outgoing, unanswered: 12
        _deal(s, aid, "D2", msk(2025, 12, 8, 17, 50))
        add_note(s, aid, "N2", "D2", "Написал на почту", created_at=msk(2025, 12, 9, 9, 20))  # 10 + 20 = 30
        n = _deal(s, aid, "D3", msk(2025, 12, 9, 11))
        _call(s, aid, n, msk(2025, 12, 9, 10, 58), direction="in", deal_id="D3", talk=300)  # under way at creation: 0
        _deal(s, aid, "D4", msk(2025, 12, 9, 12))  # never contacted: left out
        n = _deal(s, aid, "D5", msk(2025, 12, 10, 10))
        add_note(s, aid, "N5", "D5", "crmwatch: новый лид #cw7", created_at=msk(2025, 12, 10, 10, 20))  # not a contact
        _call(s, aid, n, msk(2025, 12, 10, 11, 30))  # 90
        # u2: 0, 45, 150 → median 45.0
        n = _deal(s, aid, "D6", msk(2025, 12, 13, 12), OTHER_MANAGER)  # Saturday
        _call(s, aid, n, msk(2025, 12, 13, 14))  # before the next working minute: 0
        n = _deal(s, aid, "D7", msk(2025, 12, 11, 10), OTHER_MANAGER)
        _call(s, aid, n, msk(2025, 12, 11, 10, 45), manager=OTHER_MANAGER)  # 45
        n = _deal(s, aid, "D8", msk(2025, 12, 11, 16), OTHER_MANAGER)
        _call(s, aid, n, msk(2025, 12, 11, 16, 10), direction="in", status="missed")  # a missed call is no contact
        _call(s, aid, n, msk(2025, 12, 12, 9, 30))  # 2 h on Thursday + 30 min on Friday = 150
        # Outside the report: created before the period, or deleted.
        n = _deal(s, aid, "D9", msk(2025, 12, 7, 12))
        _call(s, aid, n, msk(2025, 12, 8, 9, 1))
        n = _deal(s, aid, "D10", msk(2025, 12, 8, 10), is_deleted=True)
        _call(s, aid, n, msk(2025, 12, 8, 12))

    resp = await client.get(f"/api/accounts/{aid}/reports/managers", params=WEEK)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    medians = {i["manager_id"]: i["first_contact_median_minutes"] for i in body["items"]}
    assert medians == {MANAGER: 21.0, OTHER_MANAGER: 45.0, "u3": None}
    # The team: 0, 0, 12, 30, 45, 90, 150 → 30.0
    assert body["totals"]["first_contact_median_minutes"] == 30.0

    # A day with one deal of each: u1's D1 (12), u2 none.
    one_day = await client.get(
        f"/api/accounts/{aid}/reports/managers", params={"from": "2025-12-08", "to": "2025-12-08"}
    )
    medians = {i["manager_id"]: i["first_contact_median_minutes"] for i in one_day.json()["items"]}
    assert medians[OTHER_MANAGER] is None
    # D1 (12) and D2 (30, its note on the next day) were created on Monday: median 21.0
    assert medians[MANAGER] == 21.0


async def test_a_manager_sees_only_their_median(rt, client):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        n = _deal(s, aid, "D1", msk(2025, 12, 8, 10))
        _call(s, aid, n, msk(2025, 12, 8, 10, 12))
        n = _deal(s, aid, "D2", msk(2025, 12, 8, 10), OTHER_MANAGER)
        _call(s, aid, n, msk(2025, 12, 8, 10, 40))
    resp = await client.get(f"/api/accounts/{aid}/reports/managers", params=WEEK)
    medians = {i["manager_id"]: i["first_contact_median_minutes"] for i in resp.json()["items"]}
    assert medians == {MANAGER: 12.0, OTHER_MANAGER: 40.0}
    assert resp.json()["totals"]["first_contact_median_minutes"] == 26.0


async def test_the_median_is_in_the_spreadsheet(rt, client):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        n = _deal(s, aid, "D1", msk(2025, 12, 8, 10))
        _call(s, aid, n, msk(2025, 12, 8, 10, 12))
    resp = await client.get(f"/api/accounts/{aid}/reports/managers", params={**WEEK, "format": "csv"})
    header, *rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    column = header.index("Первый контакт с лидом, медиана, раб. мин")
    assert {r[0]: r[column] for r in rows} == {"Иван Волков": "12.0", "Анна Лебедева": "", "Итого": "12.0"}
