"""The card's undo, its line of snoozed findings, and the snooze menu's real times."""

from __future__ import annotations

from datetime import UTC, datetime

from app.accounts.models import Account
from app.widget.service import snooze_labels, until_label
from tests.app.widget.widget_support import MANAGER, deal_with_findings, token, widget_account

URL = "/widget/amocrm/findings"


def headers(tok: str) -> dict[str, str]:
    return {"X-Auth-Token": tok, "Origin": "https://demoshop.amocrm.ru", "Authorization": ""}


def test_until_labels_say_the_real_time():
    msk = "Europe/Moscow"
    tuesday = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 15:00 in Moscow
    assert until_label(datetime(2026, 12, 1, 14, 0, tzinfo=UTC), msk, "ru", tuesday) == "до 17:00"
    assert until_label(datetime(2026, 12, 2, 6, 0, tzinfo=UTC), msk, "ru", tuesday) == "до завтра 09:00"
    assert until_label(datetime(2026, 12, 7, 6, 0, tzinfo=UTC), msk, "ru", tuesday) == "до пн 09:00"
    assert until_label(datetime(2026, 12, 7, 6, 0, tzinfo=UTC), msk, "en", tuesday) == "until Mon 09:00"
    assert until_label(datetime(2027, 1, 12, 6, 0, tzinfo=UTC), msk, "ru", tuesday) == "до 12.01 09:00"


async def test_the_snooze_menu_names_monday_on_a_friday(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    async with rt.reads() as s:
        account = await s.get(Account, acc["id"])
        friday = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)  # Friday 16:00 in Moscow
        tuesday = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
        assert await snooze_labels(s, account, "ru", friday) == {"tomorrow": "до пн 09:00"}
        assert await snooze_labels(s, account, "en", friday) == {"tomorrow": "until Mon 09:00"}
        assert await snooze_labels(s, account, "ru", tuesday) == {"tomorrow": "до завтра"}
        # New Year holidays in Russia: the next working morning is days away.
        assert (await snooze_labels(s, account, "ru", datetime(2026, 12, 31, 13, 0, tzinfo=UTC)))[
            "tomorrow"
        ] == "до 11.01 09:00"


async def test_snoozed_findings_are_listed_and_can_come_back(client, rt, amo):
    acc = await widget_account(client, rt, amo)
    deal_id, items = await deal_with_findings(client, acc, at_least=2)
    a, b = items[0]["id"], items[1]["id"]
    card = (await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))).json()
    assert card["snoozed"] == [] and set(card["snooze_labels"]) == {"tomorrow"}

    snoozed = await client.post(f"{URL}/{b}/snooze", json={"preset": "tomorrow"}, headers=headers(token()))
    assert snoozed.status_code == 200 and snoozed.json()["until_label"].startswith("до ")
    card = (await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))).json()
    assert b not in {i["id"] for i in card["items"]}
    [line] = card["snoozed"]
    assert line["id"] == b and line["status"] == "snoozed" and line["until_label"] == snoozed.json()["until_label"]

    # "Bring back" (and undo) make it open again, recorded as the manager's.
    back = await client.post(f"{URL}/{b}/reopen", headers=headers(token()))
    assert back.status_code == 200 and back.json()["status"] == "open"
    card = (await client.get(URL, params={"lead_id": deal_id}, headers=headers(token()))).json()
    assert b in {i["id"] for i in card["items"]} and card["snoozed"] == []
    detail = (await client.get(f"/api/findings/{b}")).json()
    assert detail["status"] == "open" and detail["snoozed_until"] is None
    assert detail["history"][-1]["actor"] == f"user:{MANAGER}" and detail["history"][-1]["to_status"] == "open"

    # Undo of an acknowledgement; a second undo changes nothing.
    await client.post(f"{URL}/{a}/ack", headers=headers(token()))
    first = await client.post(f"{URL}/{a}/reopen", headers=headers(token()))
    again = await client.post(f"{URL}/{a}/reopen", headers=headers(token()))
    assert first.json()["status"] == again.json()["status"] == "open"
    history = (await client.get(f"/api/findings/{a}")).json()["history"]
    assert [h["to_status"] for h in history[-2:]] == ["acknowledged", "open"]


async def test_a_resolved_finding_cannot_be_reopened_from_the_card(client, rt, amo):
    from sqlalchemy import update

    from app.findings.models import Finding

    acc = await widget_account(client, rt, amo)
    _, items = await deal_with_findings(client, acc)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Finding).where(Finding.id == items[0]["id"]).values(status="resolved"))
    resp = await client.post(f"{URL}/{items[0]['id']}/reopen", headers=headers(token()))
    assert resp.status_code == 409 and resp.json()["detail"] == "a resolved finding cannot be reopened"
