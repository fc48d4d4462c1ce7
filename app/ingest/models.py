from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow


class InboxEvent(Base):
    """A raw delivery exactly as it arrived; the inbox worker turns it into mirror changes.

    (account, source, dedup_key) is unique, so a redelivery is an insert that does nothing.
    """

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("account_id", "source", "dedup_key", name="uq_inbox_events_dedup"),
        Index("ix_inbox_events_pending", "status", "next_attempt_at", "id"),
        Index("ix_inbox_events_processed", "status", "processed_at"),  # the retention purge
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(32))  # "amocrm", later "bitrix24", "telephony.mango", …
    dedup_key: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # "pending" | "done" | "failed" (gave up after inbox_max_attempts; kept for inspection)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # How many domain events it produced, and of those how many were of kinds we do not model.
    events: Mapped[int | None] = mapped_column(Integer)
    ignored: Mapped[int | None] = mapped_column(Integer)
