"""Calls: one row per call of a PBX (or of a CRM's own telephony), however many events built it.

A call is matched to the CRM through its client number: the contact that carries it and that
contact's open deal. The match is stored on the row and redone when a matching contact or deal
appears later.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        # The provider's own call id: every event of one call lands on one row.
        UniqueConstraint("account_id", "provider", "provider_call_id", name="uq_calls_provider_call"),
        Index("ix_calls_number", "account_id", "client_number", "started_at"),
        Index("ix_calls_deal", "account_id", "deal_id"),
        Index("ix_calls_manager", "account_id", "manager_id", "started_at"),
        # The reports read a period of calls: on PostgreSQL the index covers what they read (the
        # plan report's first contacts also the deal and the number), so a month of calls, or the
        # plan's 120 days, is an index-only scan however the rows lie on disk.
        Index(
            "ix_calls_started",
            "account_id",
            "started_at",
            postgresql_include=[
                "manager_id",
                "direction",
                "status",
                "talk_seconds",
                "is_final",
                "deal_id",
                "client_number",
            ],
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    provider_call_id: Mapped[str] = mapped_column(String(128))
    direction: Mapped[str | None] = mapped_column(String(8))  # in | out | internal
    client_number: Mapped[str | None] = mapped_column(String(32))  # E.164
    line_number: Mapped[str | None] = mapped_column(String(32))
    manager_ref: Mapped[str | None] = mapped_column(String(100))  # the PBX's extension or login
    manager_id: Mapped[str | None] = mapped_column(String(64))  # the CRM user
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(8))  # answered | missed | busy | failed
    # The event that closes the call has arrived; until then rules leave it alone.
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_url: Mapped[str | None] = mapped_column(Text)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    contact_id: Mapped[str | None] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    # "mirror" | "crm_search" | "source" (the event named the card itself)
    match_source: Mapped[str | None] = mapped_column(String(16))
    matched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the CRM was last asked about this number for this call (the search is done once).
    crm_searched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class TelephonyConfig(Base):
    """One PBX connected to one account: its secrets (sealed), and who is who on it."""

    __tablename__ = "telephony_configs"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Fernet ciphertext of the provider's secrets (api_key, api_salt, …).
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    # PBX extension or login → CRM user id.
    extensions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Write each finished call into the matched card through the outbox.
    log_calls: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class CallStatsDaily(Base):
    """Per manager per working day (in the account's time zone), for the dashboard."""

    __tablename__ = "call_stats_daily"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    manager_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    talk_seconds: Mapped[int] = mapped_column(Integer, default=0)
    successful: Mapped[int] = mapped_column(Integer, default=0)  # answered with talk ≥ 40 s
    incoming: Mapped[int] = mapped_column(Integer, default=0)
    outgoing: Mapped[int] = mapped_column(Integer, default=0)
    missed: Mapped[int] = mapped_column(Integer, default=0)
    cards_changed: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


__all__ = ["Call", "CallStatsDaily", "TelephonyConfig"]
