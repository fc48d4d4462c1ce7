"""The digest preview: the figures of a hand-built account, in Russian and English, and bad input."""

from __future__ import annotations

import re

import httpx

from app.accounts.models import Account
from app.mirror.models import Deal
from app.runtime import Runtime

from .scenario import build


def _row(page: str, table: str, manager: str) -> list[str]:
    body = page.split(f'<table class="{table}">', 1)[1].split("</table>", 1)[0]
    row = re.search(rf'<tr data-manager="{manager}">(.*?)</tr>', body, re.S)
    assert row, body
    return re.findall(r"<td>(.*?)</td>", row.group(1))


async def test_preview_figures(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    resp = await client.get(f"/api/accounts/{a}/digest/preview", params={"date": "2026-11-09"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert "Утренняя сводка — «Сводка», 09.11.2026" in page
    assert "Факт за 06.11.2026" in page  # Monday's digest reports Friday
    # name, calls, successful, cards changed, won, lost, findings opened, resolved
    assert _row(page, "fact", "101") == ["Анна Петрова", "3", "2", "1", "1", "0", "1", "1"]
    assert _row(page, "fact", "102") == ["Борис Иванов", "1", "0", "0", "0", "1", "0", "0"]
    # tasks due today, meetings among them
    assert _row(page, "today", "101") == ["Анна Петрова", "2", "1"]
    assert _row(page, "today", "102") == ["Борис Иванов", "0", "0"]
    # pace: 101 plans 3 won; 1 won in November so far
    assert "Анна Петрова: выигранные сделки 1 из 3" in page
    # the five oldest critical findings, oldest first, each linked to its card
    critical = page.split('<ol class="critical">', 1)[1].split("</ol>", 1)[0]
    assert critical.count("<li>") == 5
    assert critical.count('href="https://demoshop.amocrm.ru/leads/detail/D3"') == 5
    assert "с 01.10.2026 12:00" in critical and "06.10.2026" not in critical


async def test_preview_in_english(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    resp = await client.get(f"/api/accounts/{a}/digest/preview", params={"date": "2026-11-09", "lang": "en"})
    assert resp.status_code == 200
    assert "Morning digest — “Сводка”, 09.11.2026" in resp.text and "Fact for 06.11.2026" in resp.text
    b = await build(rt, language="en")
    resp = await client.get(f"/api/accounts/{b}/digest/preview", params={"date": "2026-11-09"})
    assert "The oldest critical findings" in resp.text


async def test_preview_bad_input(client: httpx.AsyncClient, rt: Runtime) -> None:
    a = await build(rt)
    for bad in ("2026-13-01", "yesterday", "2026-11-31"):
        resp = await client.get(f"/api/accounts/{a}/digest/preview", params={"date": bad})
        assert resp.status_code == 422, bad
    assert (await client.get(f"/api/accounts/{a}/digest/preview", params={"lang": "de"})).status_code == 422
    assert (await client.get("/api/accounts/999999/digest/preview")).status_code == 404
    assert (await client.get(f"/api/accounts/{2**40}/digest/preview")).status_code == 422
    assert (
        await client.get(f"/api/accounts/{a}/digest/preview", headers={"Authorization": "Bearer no"})
    ).status_code in (401, 403)


async def test_preview_counts_todays_expected_payments(client: httpx.AsyncClient, rt: Runtime) -> None:
    """With a payment date field named, today's rows say the payments expected today (and their sum)."""
    a = await build(rt)
    async with rt.sessions() as s, s.begin():
        (await s.get(Account, a)).deal_fields = {"payment_date": "700101", "payment_amount": "700102"}
        for id, manager, day, amount in (("P1", "101", "2026-11-09", "15000"), ("P2", "101", "2026-11-09", None),
                                         ("P3", "102", "2026-11-10", "9000")):  # fmt: skip
            fields = {"700101": {"value": day, "set_at": "2026-11-01T00:00:00+00:00"}}
            if amount:
                fields["700102"] = {"value": amount, "set_at": "2026-11-01T00:00:00+00:00"}
            s.add(Deal(account_id=a, id=id, name=id, responsible_user_id=manager, price=500, is_closed=False,
                       is_deleted=False, custom_fields=fields))  # fmt: skip
    page = (await client.get(f"/api/accounts/{a}/digest/preview", params={"date": "2026-11-09"})).text
    # tasks due today, meetings among them, payments expected today (the count, then the sum)
    assert _row(page, "today", "101") == ["Анна Петрова", "2", "1", "2 (15 500)"]
    assert _row(page, "today", "102") == ["Борис Иванов", "0", "0", "0"]
    assert "<th>Ожидаемые оплаты</th>" in page
