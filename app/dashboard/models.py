"""Read-only dashboard links: a secret URL for the whole team or one manager, with an expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow


class DashboardLink(Base):
    __tablename__ = "dashboard_links"
    __table_args__ = (Index("ix_dashboard_links_account", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # SHA-256 of the secret in the URL: a stolen database does not give working links.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # None: the whole team; else the only manager (the CRM's user id) the link shows.
    manager_id: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
