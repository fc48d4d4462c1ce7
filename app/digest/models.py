from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime, utcnow


class DigestSettings(Base):
    """Where and when an account's morning digest goes. The Telegram bot token is sealed with the
    same box as the CRM credentials (Runtime.box); it never leaves the database in the clear."""

    __tablename__ = "digest_settings"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    send_at: Mapped[str] = mapped_column(String(5), default="09:00")  # local wall clock, HH:MM
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64))
    telegram_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    language: Mapped[str | None] = mapped_column(String(5))  # ru | en; None: the account's
    crm: Mapped[bool] = mapped_column(Boolean, default=False)  # a task on no card for crm_user_id
    crm_user_id: Mapped[str | None] = mapped_column(String(64))  # None: the rules' supervisor_user_id
    # {"to": [...], "from", "host", "port", "security": starttls|tls|none, "username"}; the password sealed apart.
    email: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    smtp_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
