"""When the morning digest goes: on the working days of the account's business calendar, at its
local `send_at` (09:00 by default), run by the scheduler's leader (app/workers.py PERIODIC).

Every tick queues, for each account whose local time has passed `send_at` on a working day, that
day's digest; the outbox's dedup key (account, day, channel) makes every tick after the first a
no-op, so a missed tick, a restart or two schedulers at once neither lose nor double it. A process
down at 09:00 sends when it is back, the same local day; a later day does not send an old digest.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.accounts.models import Account
from app.db import utcnow
from app.rules import config as rules_config
from app.runtime import Runtime

from . import delivery
from .models import DigestSettings

log = logging.getLogger(__name__)

TICK_SECONDS = 60.0


async def due(rt: Runtime, now: datetime | None = None) -> int:
    """Queues the digests whose time has come; returns how many accounts got new outbox rows."""
    now = now or utcnow()
    async with rt.reads() as s:
        accounts = list(
            await s.scalars(
                select(Account)
                .join(DigestSettings, DigestSettings.account_id == Account.id)
                .where(DigestSettings.enabled.is_(True), Account.status == "active", Account.paused.is_(False))
                .order_by(Account.id)
            )
        )
    queued = 0
    for account in accounts:
        try:
            async with rt.sessions() as s, s.begin():
                cfg = await s.get(DigestSettings, account.id)
                if cfg is None:
                    continue
                local = now.astimezone(ZoneInfo(account.timezone))
                if local.strftime("%H:%M") < cfg.send_at:
                    continue
                doc = await rules_config.load(s, account.id)
                if not doc.business_calendar(account.timezone).is_working_day(local.date()):
                    continue
                before = await delivery.queued(s, account.id, local.date())
                rows = await delivery.enqueue(s, account, local.date())
                if set(rows.values()) - before:
                    queued += 1
        except Exception:
            # One account's bad data must not stop the others' digests.
            log.exception("digest.schedule_failed", extra={"account_id": account.id})
    if queued:
        rt.outbox_wakeup.set()
        log.info("digest.queued", extra={"accounts": queued})
    return queued


__all__ = ["TICK_SECONDS", "due"]
