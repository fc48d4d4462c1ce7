"""GET /api/accounts/{id}/reports/payments: expected tomorrow, in the next 7 days, today, overdue,
and received today, per manager with links to the cards, in the account's local days."""

from __future__ import annotations

from datetime import UTC, datetime

from app.accounts.models import Account
from app.mirror.models import Deal, Pipeline, Stage, User
from tests.conftest import create_account

FIELDS = {"date_field": "700101", "amount_field": "700102", "paid_field": "700103"}
DAY = "2026-12-10"  # a Thursday; Moscow is UTC+3


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _deal(aid: int, id: str, manager: str, stage: str, price: float, fields: dict | None, **extra) -> Deal:
    set_at = "2026-11-20T09:00:00+00:00"
    return Deal(
        account_id=aid,
        id=id,
        name=f"Сделка {id}",
        pipeline_id="1",
        stage_id=stage,
        price=price,
        responsible_user_id=manager,
        is_closed=stage in ("142", "143"),
        is_deleted=extra.pop("is_deleted", False),
        custom_fields=None
        if fields is None
        else {k: v if isinstance(v, dict) else {"value": v, "set_at": set_at} for k, v in fields.items()},
        **extra,
    )


async def _seed(rt, aid: int) -> None:
    async with rt.sessions() as s, s.begin():
        (await s.get(Account, aid)).deal_fields = {
            "payment_date": "700101",
            "payment_amount": "700102",
            "paid": "700103",
        }
        s.add(Pipeline(account_id=aid, id="1", name="Продажи"))
        s.add_all(
            [
                Stage(account_id=aid, pipeline_id="1", id="10", name="Счёт", kind="open"),
                Stage(account_id=aid, pipeline_id="1", id="142", name="Успешно", kind="won"),
                Stage(account_id=aid, pipeline_id="1", id="143", name="Отказ", kind="lost"),
                User(account_id=aid, id="101", name="Анна"),
                User(account_id=aid, id="102", name="Борис"),
            ]
        )
        tomorrow_msk = int(utc(2026, 12, 10, 21).timestamp())  # 00:00 on the 11th in Moscow
        s.add_all(
            [
                _deal(aid, "A", "101", "10", 50000, {"700101": tomorrow_msk, "700102": "45 000,50"}),
                _deal(aid, "B", "101", "10", 1000, {"700101": "2026-12-17T00:00:00+03:00"}),
                _deal(aid, "C", "102", "10", 7000, {"700101": "2026-12-18"}),
                _deal(aid, "D", "102", "10", 3000, {"700101": "05.12.2026", "700102": "2500|RUB"}),
                _deal(aid, "E", "102", "142", 9000, {"700101": "2026-12-01"}, closed_at=utc(2026, 12, 10, 7)),
                _deal(aid, "F", "101", "143", 4000, {"700101": "2026-12-01"}, closed_at=utc(2026, 12, 10, 7)),
                _deal(
                    aid,
                    "G",
                    "101",
                    "142",
                    8000,
                    {"700103": {"value": True, "set_at": "2026-12-10T06:00:00+00:00"}},
                    closed_at=utc(2026, 11, 1, 7),
                ),
                _deal(
                    aid,
                    "H",
                    "102",
                    "10",
                    600,
                    {"700101": "2026-12-10", "700103": {"value": "0", "set_at": "2026-12-10T06:00:00+00:00"}},
                ),
                _deal(aid, "I", "101", "10", 100, {"700101": "2026-12-11"}, is_deleted=True),
                _deal(aid, "J", "101", "142", 700, None, closed_at=utc(2026, 12, 9, 21, 30)),  # 00:30 on the 10th
                _deal(aid, "K", "101", "142", 800, None, closed_at=utc(2026, 12, 9, 20, 30)),  # 23:30 on the 9th
                _deal(aid, "L", "102", "10", 900, {"700101": "не указано"}),
            ]
        )


def _ids(slot: dict) -> list[str]:
    return [d["deal_id"] for d in slot["deals"]]


async def test_buckets_per_manager_with_links(client, rt):
    aid = (await create_account(client))["id"]
    await _seed(rt, aid)
    resp = await client.get(f"/api/accounts/{aid}/reports/payments", params={"date": DAY})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["date"] == DAY and body["configured"] is True and body["fields"] == FIELDS
    anna, boris = body["items"]
    assert (anna["name"], boris["name"]) == ("Анна", "Борис")
    # Tomorrow: A (a date as unix seconds, midnight in Moscow), its amount from the amount field.
    assert _ids(anna["tomorrow"]) == ["A"] and anna["tomorrow"]["amount"] == 45000.5
    assert anna["tomorrow"]["deals"][0]["url"] == "https://demoshop.amocrm.ru/leads/detail/A"
    assert anna["tomorrow"]["deals"][0]["expected_on"] == "2026-12-11"
    # Next 7 days: tomorrow up to day + 7 (B on the 17th); C on the 18th is beyond; I is deleted.
    assert _ids(anna["next_7_days"]) == ["A", "B"] and anna["next_7_days"]["amount"] == 46000.5
    assert boris["next_7_days"]["count"] == 0
    # Today: H (its paid field says "0": not received).
    assert _ids(boris["today"]) == ["H"]
    # Overdue: D (DD.MM.YYYY, 5 days ago; "2500|RUB" from the amount field); E is won, F lost.
    assert boris["overdue"]["deals"] == [
        {
            "deal_id": "D",
            "name": "Сделка D",
            "amount": 2500.0,
            "url": "https://demoshop.amocrm.ru/leads/detail/D",
            "expected_on": "2026-12-05",
            "days_overdue": 5,
        }
    ]
    assert anna["overdue"]["count"] == 0
    # Received today: won today (E; J at 00:30 Moscow time, not K at 23:30 the day before), or paid
    # today (G, won a month ago).
    assert _ids(boris["received_today"]) == ["E"]
    assert sorted(_ids(anna["received_today"])) == ["G", "J"]
    reasons = {d["deal_id"]: d["reason"] for d in anna["received_today"]["deals"]}
    assert reasons == {"G": ["paid"], "J": ["won"]}
    assert body["totals"] == {
        "overdue": {"count": 1, "amount": 2500.0},
        "today": {"count": 1, "amount": 600.0},
        "tomorrow": {"count": 1, "amount": 45000.5},
        "next_7_days": {"count": 2, "amount": 46000.5},
        "received_today": {"count": 3, "amount": 17700.0},
    }


async def test_the_next_day_moves_the_buckets_and_a_manager_filter(client, rt):
    aid = (await create_account(client))["id"]
    await _seed(rt, aid)
    body = (await client.get(f"/api/accounts/{aid}/reports/payments", params={"date": "2026-12-11"})).json()
    anna = next(i for i in body["items"] if i["manager_id"] == "101")
    assert _ids(anna["today"]) == ["A"] and _ids(anna["tomorrow"]) == []
    assert body["totals"]["received_today"]["count"] == 0
    boris = next(i for i in body["items"] if i["manager_id"] == "102")
    assert _ids(boris["next_7_days"]) == ["C"] and sorted(_ids(boris["overdue"])) == ["D", "H"]
    only = (await client.get(f"/api/accounts/{aid}/reports/payments", params={"date": DAY, "manager_id": "102"})).json()
    assert [i["manager_id"] for i in only["items"]] == ["102"]
    assert only["totals"]["received_today"]["count"] == 1
    limited = (await client.get(f"/api/accounts/{aid}/reports/payments", params={"date": DAY, "limit": 1})).json()
    anna = next(i for i in limited["items"] if i["manager_id"] == "101")
    assert anna["next_7_days"]["count"] == 2 and _ids(anna["next_7_days"]) == ["A"]  # the largest first


async def test_unconfigured_account_and_bad_input(client, rt):
    aid = (await create_account(client))["id"]
    body = (await client.get(f"/api/accounts/{aid}/reports/payments", params={"date": DAY})).json()
    assert body["configured"] is False and body["items"] == []
    for params in ({"date": "10.12.2026"}, {"date": "0"}, {"manager_id": "a b"}, {"limit": 0}):
        assert (await client.get(f"/api/accounts/{aid}/reports/payments", params=params)).status_code == 422
    assert (await client.get("/api/accounts/99999/reports/payments")).status_code == 404
