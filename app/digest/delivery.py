"""Queueing the morning digest into the outbox, and the senders of its two kinds.

One outbox row per (account, day, channel), keyed `morning:<day>:<channel>`: the outbox's unique
(account_id, dedup_key) makes "the digest of this day went to this channel" a fact recorded once,
however many schedulers or hands ask for it. The message is worded when queued and kept on the
row, so a retry sends what was queued.

Telegram (Bot API sendMessage, parse_mode HTML): a 429 waits `parameters.retry_after` (the
outbox's CrmRateLimited path, never a failure); a 400/401/403/404 is final, the row goes dead with
Telegram's own description ("Forbidden: bot was blocked by the user"); anything else (5xx, network)
is retried with the outbox's backoff. The Bot API has no idempotency key and nothing to read back:
a process dying between Telegram's answer and our record, or an answer lost on the way (a read
timeout), sends that message again on retry. That cannot be closed, so it is made visible: before
each sendMessage the row records that a post is under way (`details.posting`, the claim's attempt);
only a refusal from Telegram (429, 4xx, 5xx) clears it, and a success is recorded as the row sent. A
retry that still finds it set does not know whether the previous post arrived: it says so in the
message's first line (the reader can tell the copy) and counts it (`details.resent_unknown`). One
extra copy per lost answer or crash, never silently.

Email: the Message-ID is the row's (stable across retries), so a mail client shows a resent copy
once; the claim (attempts + 1) is committed before the SMTP transaction, like every outbox row.

CRM: a task on no card for the digest's reader (`crm_user_id`, else the rules' supervisor), with
the outbox marker, read back before a retry like the findings' digests.
"""

from __future__ import annotations

import logging
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import wording
from app.accounts.models import Account
from app.db import dialect_insert, utcnow
from app.outbox.models import OutboxAction
from app.outbox.senders import Batch, Outcome, marker, register
from app.rules import config as rules_config
from app.runtime import Runtime
from integrations.base import CrmError, CrmRateLimited, CrmRequestError, NewTask

from . import service
from .models import DigestSettings

log = logging.getLogger(__name__)

KIND_TELEGRAM = "digest_telegram"
KIND_CRM = "digest_crm"
KIND_EMAIL = "digest_email"
CHANNELS = {"telegram": KIND_TELEGRAM, "email": KIND_EMAIL, "crm": KIND_CRM}
SMTP_TIMEOUT = 30.0
TELEGRAM_LIMIT = 4096  # sendMessage's text limit, in characters
CRM_TEXT_LIMIT = 4000
TELEGRAM_TIMEOUT = 15.0


def dedup_key(day: date, channel: str) -> str:
    return f"morning:{day.isoformat()}:{channel}"


def channels(cfg: DigestSettings | None) -> list[str]:
    if cfg is None:
        return []
    out = []
    if cfg.telegram_chat_id and cfg.telegram_token:
        out.append("telegram")
    if cfg.email and cfg.email.get("to"):
        out.append("email")
    if cfg.crm:
        out.append("crm")
    return out


def _clip(text: str, limit: int) -> str:
    """Whole lines up to the limit: a cut inside a Telegram HTML tag would make the message refused."""
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 1  # the closing "…"
    for line in text.split("\n"):
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join([*kept, "…"])


async def enqueue(s: AsyncSession, account: Account, day: date) -> dict[str, int | None]:
    """Queues the day's digest on every configured channel: channel → the outbox row's id (the
    existing row's when it was queued before: nothing is added twice)."""
    cfg = await s.get(DigestSettings, account.id)
    chosen = channels(cfg)
    if not chosen:
        return {}
    assert cfg is not None
    out: dict[str, int | None] = {}
    existing = await s.execute(
        select(OutboxAction.dedup_key, OutboxAction.id).where(
            OutboxAction.account_id == account.id,
            OutboxAction.dedup_key.in_([dedup_key(day, c) for c in chosen]),
        )
    )
    known = {key: row_id for key, row_id in existing}
    for channel in list(chosen):
        if dedup_key(day, channel) in known:
            out[channel] = known[dedup_key(day, channel)]
            chosen.remove(channel)
    if not chosen:
        return out  # queued before: the scheduler's every tick after the first lands here
    lang = service.language(account, cfg.language)
    digest = await service.build(s, account, day)
    doc = await rules_config.load(s, account.id)
    now = utcnow()
    for channel in chosen:
        extra: dict[str, Any] = {}
        if channel == "telegram":
            message = _clip(service.render_text(digest, lang, account.timezone, telegram=True), TELEGRAM_LIMIT)
            user = None
        elif channel == "email":
            message, user = service.render_text(digest, lang, account.timezone), None
            extra = {
                "html": service.render_html(digest, lang, account.timezone),
                "subject": service.title(digest, lang),
            }
        else:
            message = _clip(service.render_text(digest, lang, account.timezone), CRM_TEXT_LIMIT)
            user = cfg.crm_user_id or doc.supervisor_user_id
        extra["lang"] = lang  # words a resend's note (Telegram)
        key = dedup_key(day, channel)
        await s.execute(
            dialect_insert(s, OutboxAction.__table__)
            .values(
                account_id=account.id,
                finding_id=None,
                kind=CHANNELS[channel],
                purpose="morning",
                dedup_key=key,
                deal_id=None,
                user_id=user,
                ref_id=None,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                details={"day": day.isoformat(), "channel": channel, "message": message, **extra},
            )
            .on_conflict_do_nothing()
        )
        out[channel] = await s.scalar(
            select(OutboxAction.id).where(OutboxAction.account_id == account.id, OutboxAction.dedup_key == key)
        )
    return out


async def queued(s: AsyncSession, account_id: int, day: date) -> set[int]:
    """The outbox rows of the day's digest already queued, on any channel."""
    keys = [dedup_key(day, c) for c in CHANNELS]
    return set(
        await s.scalars(
            select(OutboxAction.id).where(OutboxAction.account_id == account_id, OutboxAction.dedup_key.in_(keys))
        )
    )


# --- Telegram --------------------------------------------------------------------------------------


def _telegram_error(resp: httpx.Response) -> Exception:
    try:
        body: dict[str, Any] = resp.json()
    except ValueError:
        body = {}
    description = str(body.get("description") or resp.reason_phrase or resp.status_code)
    if resp.status_code == 429:
        retry_after = float((body.get("parameters") or {}).get("retry_after") or 30)
        return CrmRateLimited(f"telegram: {description}", retry_after)
    if resp.status_code in (400, 401, 403, 404):
        return CrmRequestError(f"telegram {resp.status_code}: {description}")
    return CrmError(f"telegram {resp.status_code}: {description}")


async def _mark_posting(rt: Runtime, row: OutboxAction, posting: int | None, **more: Any) -> None:
    """Records on the row (while the claim is still ours) that a post is under way (`posting`: the
    claim's attempt) or that Telegram answered (None)."""
    details = {**(row.details or {}), "posting": posting, **more}
    async with rt.sessions() as s, s.begin():
        await s.execute(
            update(OutboxAction)
            .where(OutboxAction.id == row.id, OutboxAction.status == "sending", OutboxAction.attempts == row.attempts)
            .values(details=details)
        )
    row.details = details


def _resend_note(row: OutboxAction, message: str) -> str:
    lang = (row.details or {}).get("lang") or "ru"
    note = wording.of(lang if lang in wording.LANGUAGES else "ru").DIGEST["resent"]
    return _clip(f"{note}\n\n{message}", TELEGRAM_LIMIT)


async def send_telegram(batch: Batch) -> Outcome:
    out = batch.outcome
    async with batch.rt.reads() as s:
        cfg = await s.get(DigestSettings, batch.account.id)
    if cfg is None or not cfg.telegram_token or not cfg.telegram_chat_id:
        out.cancelled.update(r.id for r in batch.rows)  # the channel was switched off since
        return out
    token = batch.rt.box.open(cfg.telegram_token)["bot_token"]
    async with httpx.AsyncClient(timeout=TELEGRAM_TIMEOUT) as http:
        for row in batch.rows:
            details = row.details or {}
            message = details.get("message", "")
            more: dict[str, Any] = {}
            if details.get("posting") is not None:
                # An earlier post got no answer we recorded: it may have arrived. Say so.
                message = _resend_note(row, message)
                more["resent_unknown"] = int(details.get("resent_unknown") or 0) + 1
                log.warning(
                    "digest.telegram_resent_unknown",
                    extra={"account_id": row.account_id, "row_id": row.id, "attempt": row.attempts},
                )
            out.texts[row.id] = message
            await _mark_posting(batch.rt, row, row.attempts, **more)
            try:
                resp = await http.post(
                    f"{batch.rt.settings.telegram_api_url.rstrip('/')}/bot{token}/sendMessage",
                    json={
                        "chat_id": cfg.telegram_chat_id,
                        "text": message,
                        "parse_mode": "HTML",
                        "disable_web_page_preview": True,
                    },
                )
            except httpx.HTTPError as exc:
                # The token is in the URL: never let it into the row's error. `posting` stays set:
                # the request may have reached Telegram (a read timeout, a reset after sending).
                raise CrmError(f"telegram unreachable: {type(exc).__name__}") from None
            if resp.status_code == 200 and resp.json().get("ok"):
                # `posting` stays set: until the outbox records this row sent, a crash here means
                # the message arrived and the retry sends a copy (which then says so).
                out.sent[row.id] = str(resp.json()["result"]["message_id"])
                continue
            # Telegram refused it (429, 4xx, 5xx): this attempt did not arrive, the next is no copy.
            await _mark_posting(batch.rt, row, None)
            raise _telegram_error(resp)
    return out


# --- email ---------------------------------------------------------------------------------------


def email_message(account: Account, cfg: dict[str, Any], row: OutboxAction) -> EmailMessage:
    """HTML with a plain-text part. The Message-ID is the row's, so a resend after a lost answer
    carries the same id and a mail client shows it once."""
    details = row.details or {}
    msg = EmailMessage()
    msg["Subject"] = details.get("subject") or "crmwatch"
    msg["From"] = cfg["from"]
    msg["To"] = ", ".join(cfg["to"])
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<digest-{account.id}-{details.get('day')}-{row.id}@crmwatch>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(details.get("message", ""))
    msg.add_alternative(details.get("html", ""), subtype="html")
    return msg


async def send_email(batch: Batch) -> Outcome:
    out = batch.outcome
    async with batch.rt.reads() as s:
        cfg = await s.get(DigestSettings, batch.account.id)
    if cfg is None or not cfg.email or not cfg.email.get("to"):
        out.cancelled.update(r.id for r in batch.rows)
        return out
    smtp = cfg.email
    password = batch.rt.box.open(cfg.smtp_password)["password"] if cfg.smtp_password else None
    for row in batch.rows:
        msg = email_message(batch.account, smtp, row)
        out.texts[row.id] = (row.details or {}).get("message", "")
        try:
            await aiosmtplib.send(
                msg,
                hostname=smtp["host"],
                port=smtp["port"],
                username=smtp.get("username"),
                password=password,
                use_tls=smtp.get("security") == "tls",
                start_tls=smtp.get("security") == "starttls",
                timeout=SMTP_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({e.code for e in exc.recipients})
            error = (
                f"smtp: recipients refused: {'; '.join(f'{e.recipient} {e.code} {e.message}' for e in exc.recipients)}"
            )
            raise (CrmRequestError(error) if all(c >= 500 for c in codes) else CrmError(error)) from None
        except aiosmtplib.SMTPResponseException as exc:
            error = f"smtp {exc.code}: {exc.message}"
            raise (CrmRequestError(error) if exc.code >= 500 else CrmError(error)) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise CrmError(f"smtp unreachable: {type(exc).__name__}: {exc}") from None
        out.sent[row.id] = msg["Message-ID"]
    return out


# --- the CRM ---------------------------------------------------------------------------------------


async def send_crm(batch: Batch) -> Outcome:
    out = batch.outcome
    for r in batch.rows:
        out.texts[r.id] = f"{(r.details or {}).get('message', '')}\n{marker(r.id)}"
    retried = [r for r in batch.rows if r.attempts > 1]
    if retried:
        found = await batch.client.find_marked_tasks_of(
            sorted({r.user_id for r in retried if r.user_id}), [marker(r.id) for r in retried]
        )
        for r in retried:
            if marker(r.id) in found:
                out.sent[r.id] = found[marker(r.id)]
    todo = [r for r in batch.rows if r.id not in out.sent]
    if not todo:
        return out
    async with batch.rt.reads() as s:
        doc = await rules_config.load(s, batch.account.id)
    due = doc.business_calendar(batch.account.timezone).add_working(
        batch.now, rules_config.NotifyIn().task_due_hours * 3600
    )
    created = await batch.client.create_tasks(
        [
            NewTask(request_id=str(r.id), deal_id=None, responsible_user_id=r.user_id, text=out.texts[r.id], due_at=due)
            for r in todo
        ]
    )
    for r in todo:
        if str(r.id) in created:
            out.sent[r.id] = created[str(r.id)]
    return out


register(KIND_TELEGRAM, send_telegram)
register(KIND_CRM, send_crm)
register(KIND_EMAIL, send_email)


def seal_token(rt: Runtime, token: str) -> bytes:
    return rt.box.seal({"bot_token": token})


def seal_password(rt: Runtime, password: str) -> bytes:
    return rt.box.seal({"password": password})


__all__ = [
    "CHANNELS",
    "KIND_CRM",
    "KIND_TELEGRAM",
    "channels",
    "dedup_key",
    "enqueue",
    "queued",
    "seal_password",
    "seal_token",
]
