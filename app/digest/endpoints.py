"""Admin API of the morning digest: its settings, the preview, and "send now"."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, field_validator

from app.db import utcnow
from app.deps import AccountId, IsoDay, account_or_404, runtime
from app.reports.periods import today
from app.runtime import Runtime
from app.security import require_admin

from . import delivery, service
from .models import DigestSettings

router = APIRouter(prefix="/api/accounts", tags=["digest"], dependencies=[Depends(require_admin)])

DayParam = Query(
    None, description="the morning the digest is for, YYYY-MM-DD (the account's local day); default: today"
)
# What the Bot API issues: "<bot id>:<35 characters>".
EMAIL_PATTERN = r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.\-]{1,253}\.[A-Za-z]{2,63}$"
TOKEN_RE = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")


class TelegramIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot_token: SecretStr
    chat_id: str = Field(pattern=r"^(-?[0-9]{1,20}|@[A-Za-z0-9_]{5,32})$", description="a chat id or @channel")

    @field_validator("bot_token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not TOKEN_RE.match(v.get_secret_value()):
            raise ValueError("not a Telegram bot token (<bot id>:<secret>)")
        return v


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1, max_length=20)
    sender: str = Field(alias="from", pattern=EMAIL_PATTERN, description="the From address")
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-]+$")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(None, max_length=200)
    password: SecretStr | None = None

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            if not re.match(EMAIL_PATTERN, address):
                raise ValueError(f"not an email address: {address!r}")
        return v


class DigestSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # JSON booleans only, as the schema says ("0" is refused, not read as false).
    enabled: StrictBool = True
    send_at: str = Field("09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local time, HH:MM")
    telegram: TelegramIn | None = Field(None, description="null: no Telegram")
    email: EmailIn | None = Field(None, description="null: no email")
    language: Literal["ru", "en"] | None = Field(None, description="the digest's language; null: the account's")
    crm: StrictBool = Field(False, description="a task on no card in the CRM for crm_user_id")
    crm_user_id: str | None = Field(None, max_length=64, description="default: the rules' supervisor_user_id")


class DigestSettingsOut(BaseModel):
    enabled: bool
    send_at: str
    telegram_chat_id: str | None
    telegram_token_set: bool
    language: str | None = None
    email: dict[str, Any] | None = None
    crm: bool
    crm_user_id: str | None


def _out(cfg: DigestSettings | None) -> DigestSettingsOut:
    if cfg is None:
        return DigestSettingsOut(
            enabled=False, send_at="09:00", telegram_chat_id=None, telegram_token_set=False, crm=False, crm_user_id=None
        )
    return DigestSettingsOut(
        enabled=cfg.enabled,
        send_at=cfg.send_at,
        telegram_chat_id=cfg.telegram_chat_id,
        telegram_token_set=cfg.telegram_token is not None,
        language=cfg.language,
        email=None if cfg.email is None else {**cfg.email, "password_set": cfg.smtp_password is not None},
        crm=cfg.crm,
        crm_user_id=cfg.crm_user_id,
    )


@router.get("/{account_id}/digest/settings", response_model=DigestSettingsOut)
async def get_settings(account_id: AccountId, rt: Runtime = Depends(runtime)) -> DigestSettingsOut:
    """Where and when the morning digest goes (the bot token is never shown)."""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        return _out(await s.get(DigestSettings, account_id))


@router.put("/{account_id}/digest/settings", response_model=DigestSettingsOut)
async def put_settings(
    account_id: AccountId, body: DigestSettingsIn, rt: Runtime = Depends(runtime)
) -> DigestSettingsOut:
    """Replaces the digest's settings. The bot token is sealed like the CRM credentials."""
    async with rt.sessions() as s, s.begin():
        await account_or_404(s, account_id)
        cfg = await s.get(DigestSettings, account_id)
        if cfg is None:
            cfg = DigestSettings(account_id=account_id)
            s.add(cfg)
        cfg.enabled, cfg.send_at, cfg.crm, cfg.crm_user_id = body.enabled, body.send_at, body.crm, body.crm_user_id
        cfg.language = body.language
        if body.telegram is None:
            cfg.telegram_chat_id, cfg.telegram_token = None, None
        else:
            cfg.telegram_chat_id = body.telegram.chat_id
            cfg.telegram_token = delivery.seal_token(rt, body.telegram.bot_token.get_secret_value())
        if body.email is None:
            cfg.email, cfg.smtp_password = None, None
        else:
            e = body.email
            cfg.email = {
                "to": e.to,
                "from": e.sender,
                "host": e.host,
                "port": e.port,
                "security": e.security,
                "username": e.username,
            }
            cfg.smtp_password = (
                None if e.password is None else delivery.seal_password(rt, e.password.get_secret_value())
            )
        cfg.updated_at = utcnow()
        await s.flush()
        return _out(cfg)


@router.get("/{account_id}/digest/preview", response_class=HTMLResponse)
async def preview(
    account_id: AccountId,
    day: IsoDay | None = Query(None, alias="date", description=DayParam.description),
    lang: Literal["ru", "en"] | None = Query(None, description="default: the account's language"),
    rt: Runtime = Depends(runtime),
) -> HTMLResponse:
    """The digest of the morning `date` as HTML: the previous working day's fact per manager,
    today's tasks (and meetings, when the `meeting_held` milestone names task types), the pace
    against the month's plan, and the five oldest open critical findings with links to their cards."""
    async with rt.reads() as s:
        account = await account_or_404(s, account_id)
        day = day or today(utcnow(), account.timezone)
        digest = await service.build(s, account, day)
        return HTMLResponse(service.render_html(digest, service.language(account, lang), account.timezone))


@router.post("/{account_id}/digest/send", status_code=202, responses={409: {}})
async def send(
    account_id: AccountId,
    day: IsoDay | None = Query(None, alias="date", description=DayParam.description),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Queues the digest of the morning `date` on every configured channel now, through the outbox:
    once per account, day and channel (asking again returns the same rows)."""
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        day = day or today(utcnow(), account.timezone)
        queued = await delivery.enqueue(s, account, day)
    if not queued:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no digest channel is configured: PUT /api/accounts/{id}/digest/settings first"
        )
    rt.outbox_wakeup.set()
    return {"date": day, "outbox": queued}
