"""The demo's PBX: a Mango Office VPBX that posts signed call summaries into the scripted day.

Three calls, placed a couple of working hours back so that their windows have passed: a long
talk nobody wrote down, a client's call nobody answered or returned, and a number the CRM does
not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.rules.config import RulesDocument
from integrations.amocrm.demo_data import LEBEDEV, MOROZOVA, VOLKOV
from integrations.telephony.mango import call_summary, signed_form

API_KEY, API_SALT = "demo-mango-api-key", "demo-mango-api-salt"
LINE = "74951234567"
EXTENSIONS = {"102": str(VOLKOV), "103": str(MOROZOVA), "104": str(LEBEDEV)}


def _summary(entry: str, direction: int, ext: str, client: str, start: int, talk: int) -> dict[str, Any]:
    return call_summary(
        entry,
        inbound=direction == 1,
        extension=ext,
        domain="demoshop.mangosip.ru",
        client=client,
        line=LINE,
        start=start,
        talk=talk,
    )


def script(now: datetime, timezone: str) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """The calls, each with its title in Russian and English."""
    calendar = RulesDocument().business_calendar(timezone)
    # Two working hours back (whatever the hour the demo runs at): every window has passed.
    anchor = int(calendar.cutoff(now, 2 * 3600).timestamp())
    return [
        (
            (
                "Разговор 3 мин с Алексеем Соколовым, в карточке ничего",
                "A 3-minute talk with Alexey Sokolov, nothing in the card",
            ),
            _summary("ZGVtby1jYWxsLTE=", 2, "102", "79123456704", anchor - 900, 180),
        ),
        (
            ("Пропущенный от Павла Новикова, не перезвонили", "A missed call from Pavel Novikov, not returned"),
            _summary("ZGVtby1jYWxsLTI=", 1, "104", "79123456706", anchor - 600, 0),
        ),
        (
            ("Звонок с номера, которого нет в CRM", "A call from a number the CRM does not know"),
            _summary("ZGVtby1jYWxsLTM=", 1, "103", "79161234599", anchor - 300, 75),
        ),
    ]


async def feed(
    http: httpx.AsyncClient, account: dict[str, Any], timezone: str
) -> tuple[str, list[tuple[tuple[str, str], int]]]:
    """Connects the PBX and posts its calls; returns the hook URL and each call's title and answer."""
    resp = await http.put(
        f"/api/accounts/{account['id']}/telephony/mango",
        json={"api_key": API_KEY, "api_salt": API_SALT, "extensions": EXTENSIONS},
    )
    resp.raise_for_status()
    hook = resp.json()["hook_url"]
    path = "/hooks/telephony/mango/" + account["key"] + "/events/summary"
    answers = []
    for titles, summary in script(datetime.now(UTC), timezone):
        body = signed_form(API_KEY, API_SALT, summary)
        r = await http.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        answers.append((titles, r.status_code))
    return hook, answers
