from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow


class OutboxAction(Base):
    """One write to the CRM, recorded in the same transaction as the finding change that caused it.

    The row holds the intent (what, for which finding and deal, for whom, why); the delivery
    worker words it and sends it. `dedup_key` makes "notify this opening of this finding" a
    fact that can be recorded once, however many sweeps see it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("account_id", "dedup_key", name="uq_outbox_dedup"),
        Index("ix_outbox_due", "status", "next_attempt_at", "id"),
        Index("ix_outbox_finding", "finding_id"),
        Index("ix_outbox_sent", "status", "sent_at"),  # the retention purge
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id", ondelete="SET NULL"))
    # create_task | add_note | close_task | digest (one task summing up many findings, on no deal)
    kind: Mapped[str] = mapped_column(String(16))
    # open | escalate | repeat | resolve; digest: backlog | backlog_team | flood
    purpose: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str] = mapped_column(String(120))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))  # whom a task is for
    # close_task: the create_task row whose CRM task it closes; grouped: the digest row
    ref_id: Mapped[int | None] = mapped_column(BigId)
    # pending | sending | sent | dead | cancelled | grouped (folded into the digest ref_id names)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    # What the CRM gave back: the task's or note's id there.
    external_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)  # as sent, for the record and for reconciling
    # digest: what it sums up ({"rules": {rule: count}, "managers": {user id: count}}), worded at delivery
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
