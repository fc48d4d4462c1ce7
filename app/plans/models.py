"""A month's plan per manager: revenue and/or won deals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime, utcnow


class Plan(Base):
    __tablename__ = "plans"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "YYYY-MM", the account's local month
    manager_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the CRM's own user id
    # None: no plan of that kind for the manager (a plan may set revenue, won deals, or both).
    revenue: Mapped[float | None] = mapped_column(Float)
    won_deals: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
