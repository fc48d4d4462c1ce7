from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime, utcnow


class Account(Base):
    """One CRM installation we watch (an amoCRM account, a Bitrix24 portal)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    crm: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(500))
    # The secret in this account's webhook URLs.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Moscow")
    region: Mapped[str] = mapped_column(String(2), default="RU")
    language: Mapped[str] = mapped_column(String(5), default="ru")
    # What the CRM says its own id/subdomain is; webhooks must match once known.
    external_id: Mapped[str | None] = mapped_column(String(64))
    subdomain: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of a secret the CRM puts into each delivery (Bitrix24's application_token), if it has one.
    webhook_secret_hash: Mapped[str | None] = mapped_column(String(64))
    auth_kind: Mapped[str] = mapped_column(String(16))  # "token" | "oauth"
    # Fernet ciphertext of the credentials JSON; never leaves the process in clear text.
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    # Bumped on each OAuth rotation so a refresher can tell it lost a race.
    credentials_version: Mapped[int] = mapped_column(Integer, default=1)
    # "active" | "needs_attention" (the CRM refuses our credentials)
    status: Mapped[str] = mapped_column(String(32), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Paused: no evaluation and no writes to the CRM until resumed (webhooks and the backfill go on).
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the account connects or is fully re-synced: what evaluations find until the sweep
    # after the backfill is the backlog, announced by the rules document's `announce_backlog`
    # instead of one task per finding. That sweep clears it.
    backlog_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The deal fields the account names, role → the CRM's field id (app/payments: payment_date,
    # payment_amount, paid); the mirror keeps these custom fields of deals and no others.
    deal_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # "never" | "queued" | "running" | "done" | "failed"
    sync_state: Mapped[str] = mapped_column(String(16), default="never")
    sync_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sync_section: Mapped[str | None] = mapped_column(String(32))
    sync_error: Mapped[str | None] = mapped_column(Text)
    sync_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sync_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sync_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sync_finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    # The scheduler sweeps the account when next_sweep_at has passed.
    next_sweep_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_sweep_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
