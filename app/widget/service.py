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

from .schemas import CardFinding

# The card shows what needs the manager now: open and not kept quiet by another finding.
VISIBLE = ("open",)
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class NotFound(Exception):
    pass


async def card_findings(s: AsyncSession, account: Account, deal_id: str, public_url: str, lang: str | None
                        ) -> list[CardFinding]:
    rows = list(await s.scalars(select(Finding).where(
        Finding.account_id == account.id, Finding.deal_id == deal_id, Finding.status.in_(VISIBLE),
        Finding.suppressed.is_(False)).order_by(Finding.started_at, Finding.id)))
    rendered = await findings.render(s, account, rows, public_url, lang)
    items = [CardFinding(id=f.id, rule=f.rule, title=f.title, message=f.message, severity=f.severity,
                         since=f.started_at, status=f.status) for f in rendered]
    return sorted(items, key=lambda i: (SEVERITY_ORDER.get(i.severity, 1), i.since))


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
        hour=0, minute=0, second=0, microsecond=0)
    return calendar.next_working_start(local_midnight)


async def snooze(s: AsyncSession, account: Account, finding_id: int, preset: str, actor: str) -> Finding:
    finding = await _own_finding(s, account, finding_id)
    until = await snooze_until(s, account, preset)
    return await findings.snooze(s, finding, until, actor, "из карточки сделки")
