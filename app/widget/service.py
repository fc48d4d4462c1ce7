"""What the card shows and what the manager may do there, the same for every CRM's card."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.db import utcnow
from app.findings import service as findings
from app.findings.models import Finding
from app.rules import config as rules_config

from .schemas import CardFinding, CardFindings

# The card shows what needs the manager now: open and not kept quiet by another finding.
VISIBLE = ("open",)
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class NotFound(Exception):
    pass


WEEKDAYS = {"ru": ("пн", "вт", "ср", "чт", "пт", "сб", "вс"), "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
UNTIL = {
    "ru": {"tomorrow": "до завтра", "until": "до {when}", "tomorrow_at": "завтра {time}"},
    "en": {"tomorrow": "until tomorrow", "until": "until {when}", "tomorrow_at": "tomorrow {time}"},
}


def until_label(until: datetime, timezone: str, lang: str, now: datetime | None = None) -> str:
    """ "до 15:00", "до завтра 09:00", "до пн 09:00" or "до 12.01 09:00": when a snooze ends, as a
    manager reads it, in the account's time zone."""
    zone = ZoneInfo(timezone)
    local, today = until.astimezone(zone), (now or utcnow()).astimezone(zone).date()
    clock = local.strftime("%H:%M")
    days = (local.date() - today).days
    if days <= 0:
        when = clock
    elif days == 1:
        when = UNTIL[lang]["tomorrow_at"].format(time=clock)
    elif days < 7:
        when = f"{WEEKDAYS[lang][local.weekday()]} {clock}"
    else:
        when = f"{local:%d.%m} {clock}" if lang == "ru" else f"{local.day} {local:%b} {clock}"
    return UNTIL[lang]["until"].format(when=when)


async def snooze_labels(s: AsyncSession, account: Account, lang: str, now: datetime | None = None) -> dict[str, str]:
    """The snooze menu's "until tomorrow": said so only when the next working morning is tomorrow."""
    now = now or utcnow()
    morning = await snooze_until(s, account, "tomorrow", now)
    tomorrow = (now.astimezone(ZoneInfo(account.timezone)) + timedelta(days=1)).date()
    if morning.astimezone(ZoneInfo(account.timezone)).date() == tomorrow:
        return {"tomorrow": UNTIL[lang]["tomorrow"]}
    return {"tomorrow": until_label(morning, account.timezone, lang, now)}


async def _card(
    s: AsyncSession, account: Account, deal_id: str, public_url: str, lang: str | None, statuses: tuple[str, ...]
) -> list[CardFinding]:
    rows = list(
        await s.scalars(
            select(Finding)
            .where(
                Finding.account_id == account.id,
                Finding.deal_id == deal_id,
                Finding.status.in_(statuses),
                Finding.suppressed.is_(False),
            )
            .order_by(Finding.started_at, Finding.id)
        )
    )
    rendered = await findings.render(s, account, rows, public_url, lang)
    label_lang = lang or account.language
    items = [
        CardFinding(
            id=f.id,
            rule=f.rule,
            title=f.title,
            message=f.message,
            severity=f.severity,
            since=f.started_at,
            status=f.status,
            snoozed_until=f.snoozed_until,
            until_label=until_label(f.snoozed_until, account.timezone, label_lang) if f.snoozed_until else None,
        )
        for f in rendered
    ]
    return sorted(items, key=lambda i: (SEVERITY_ORDER.get(i.severity, 1), i.since))


async def card_findings(
    s: AsyncSession, account: Account, deal_id: str, public_url: str, lang: str | None
) -> list[CardFinding]:
    return await _card(s, account, deal_id, public_url, lang, VISIBLE)


async def card_snoozed(
    s: AsyncSession, account: Account, deal_id: str, public_url: str, lang: str | None
) -> list[CardFinding]:
    """The deal's snoozed findings, soonest back first."""
    items = await _card(s, account, deal_id, public_url, lang, ("snoozed",))
    return sorted(items, key=lambda i: (i.snoozed_until or i.since, i.id))


async def card(s: AsyncSession, account: Account, deal_id: str, public_url: str, lang: str) -> CardFindings:
    """What the card shows: the open findings, the snoozed ones, and the snooze menu's labels."""
    return CardFindings(
        deal_id=deal_id,
        lang=lang,
        items=await card_findings(s, account, deal_id, public_url, lang),
        snoozed=await card_snoozed(s, account, deal_id, public_url, lang),
        snooze_labels=await snooze_labels(s, account, lang),
    )


async def _own_finding(s: AsyncSession, account: Account, finding_id: int) -> Finding:
    finding = await s.get(Finding, finding_id, with_for_update=True)
    # Another account's finding does not exist as far as this card is concerned.
    if finding is None or finding.account_id != account.id:
        raise NotFound(f"finding {finding_id} not found")
    return finding


async def acknowledge(s: AsyncSession, account: Account, finding_id: int, actor: str) -> Finding:
    finding = await _own_finding(s, account, finding_id)
    return await findings.acknowledge(s, finding, actor, "из карточки сделки")


async def snooze_until(s: AsyncSession, account: Account, preset: str, now: datetime | None = None) -> datetime:
    """The end of a snooze the card offers: an hour, the next working morning, or a week."""
    now = now or utcnow()
    if preset == "1h":
        return now + timedelta(hours=1)
    if preset == "1w":
        return now + timedelta(days=7)
    assert preset == "tomorrow"
    doc = await rules_config.load(s, account.id)
    calendar = doc.business_calendar(account.timezone)
    local_midnight = (now.astimezone(ZoneInfo(account.timezone)) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return calendar.next_working_start(local_midnight)


async def snooze(s: AsyncSession, account: Account, finding_id: int, preset: str, actor: str) -> Finding:
    finding = await _own_finding(s, account, finding_id)
    until = await snooze_until(s, account, preset)
    return await findings.snooze(s, finding, until, actor, "из карточки сделки")


async def reopen(s: AsyncSession, account: Account, finding_id: int, actor: str) -> Finding:
    finding = await _own_finding(s, account, finding_id)
    return await findings.reopen(s, finding, actor, "из карточки сделки")


def action_answer(f: Finding, actor: str, timezone: str, lang: str) -> dict[str, object]:
    """What the card's ack / snooze / reopen calls answer: the new state, and its end as a label."""
    return {
        "id": f.id,
        "status": f.status,
        "by": actor,
        "until": f.snoozed_until.isoformat() if f.snoozed_until else None,
        "until_label": until_label(f.snoozed_until, timezone, lang) if f.snoozed_until else None,
    }
