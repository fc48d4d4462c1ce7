from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime, utcnow


class RuleConfig(Base):
    """An account's rule settings, overrides, exclusions and business calendar: one validated document."""

    __tablename__ = "rule_configs"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ManagerPace(Base):
    """Each manager's pace against the month's plan, per measured figure: written by app/plans
    (plans.behind.refresh, a periodic job) and read by the plan_behind_pace rule, which may not
    import the plans (they import the rules). One row per (account, manager, figure), replaced at
    every refresh."""

    __tablename__ = "manager_pace"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    manager_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    milestone: Mapped[str] = mapped_column(String(32), primary_key=True)  # revenue | won_deals | a milestone
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM, the account's local month it was computed for
    target: Mapped[float] = mapped_column(Float)
    fact: Mapped[float] = mapped_column(Float)
    expected: Mapped[float] = mapped_column(Float)  # the target pro-rated over the working time gone
    behind_percent: Mapped[float] = mapped_column(Float)  # 0 when on pace
    elapsed_days: Mapped[float] = mapped_column(Float)  # the month's working days gone
    # Since when the manager has been behind on this figure this month (None: on pace).
    behind_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
