"""The link at the end of every task and note crmwatch writes opens a read-only page a manager
can see without signing in: the finding, its status and the deal's card in the CRM. The link is
signed; the row id in it is also the mark the outbox reads back to stay exactly-once."""

from __future__ import annotations

import re

from app.outbox import delivery
from tests.app.outbox.outbox_support import (
    MANAGER,
    T0,
    add_deals,
    crm_notes,
    crm_tasks,
    evaluate,
    new_account,
    outbox,
    page_link,
    plan_task,
    rules_doc,
)

QUIET = {"escalate_after_hours": None, "repeat_hours": None}
LINK = re.compile(r"Подробнее: (http://crmwatch\.test(/f/\S+))$")


async def test_a_task_links_to_a_page_the_manager_can_open(client, rt, amo):
    aid = await new_account(rt, amo=amo, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [31000001], amo=amo)
    await evaluate(rt, aid, T0)
    await delivery.deliver_pending(rt)
    [task] = crm_tasks(amo)
    [note] = crm_notes(amo)
    assert "#cw" not in task["text"] and "/api/" not in task["text"]
    url, path = LINK.search(task["text"]).groups()
    [row] = await outbox(rt, kind="create_task")
    assert url == page_link(rt, row.id)

    # No admin token, no session: the link alone opens it.
    page = await client.get(path, headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Сделка без задачи" in html and "открыто" in html and "Дмитрий Волков" in html
    assert 'href="https://demoshop.amocrm.ru/leads/detail/31000001"' in html and "Сделка 31000001" in html
    assert page.headers["cache-control"] == "no-store"
    assert (await client.get(path + "?lang=en", headers={"Authorization": ""})).text.count("Open the deal") == 1
    # The note's link is its own, and opens the same finding.
    _, note_path = LINK.search(note["params"]["text"]).groups()
    assert note_path != path and "Сделка без задачи" in (await client.get(note_path)).text

    # Fixed: the page says so.
    await plan_task(rt, aid, "31000001", T0)
    await evaluate(rt, aid, T0.replace(minute=5))
    assert "устранено" in (await client.get(path)).text


async def test_a_link_that_is_not_signed_opens_nothing(client, rt, amo):
    aid = await new_account(rt, amo=amo, rules=rules_doc("deal_without_task", notify=QUIET))
    await add_deals(rt, aid, [31000001], amo=amo)
    await evaluate(rt, aid, T0)
    [row, _] = await outbox(rt)
    good = page_link(rt, row.id).removeprefix("http://crmwatch.test")
    other = page_link(rt, row.id + 100).removeprefix("http://crmwatch.test")
    forged = f"/f/{row.id + 1}-{good.rsplit('-', 1)[1]}"  # another row with this row's signature
    for path in (forged, f"/f/{row.id}-AAAAAAAAAAAAAAAA", f"/f/{row.id}", "/f/x-y"):
        refused = await client.get(path, headers={"Authorization": ""})
        assert refused.status_code == 404 and "Сделка 31000001" not in refused.text
    assert (await client.get(other)).status_code == 404  # signed, but no such row


async def test_a_digest_links_to_the_list_it_sums_up(client, rt, amo):
    aid = await new_account(rt, amo=amo, rules=rules_doc("deal_without_task", notify=QUIET, flood_limit=2))
    await add_deals(rt, aid, [31000001, 31000002], amo=amo)
    await evaluate(rt, aid, T0)
    await delivery.deliver_pending(rt)
    [task] = [t for t in amo.tasks.values() if t["entity_id"] is None]
    assert task["responsible_user_id"] == int(MANAGER)
    _, path = LINK.search(task["text"]).groups()
    html = (await client.get(path)).text
    assert html.count("Сделка без задачи</b>") == 2 and "leads/detail/31000002" in html
