from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow

# States in which a finding is still alive (not resolved).
ACTIVE = ("pending", "open", "acknowledged", "snoozed")
# States a finding ends in: fixed (or made moot), or past its rule's look-back window unfixed.
ENDED = ("resolved", "expired")
# A finding that can speak (escalate, remind): open, not suppressed, not part of a connection's
# backlog. The partial index ix_findings_speaking holds exactly these; a query uses it when its
# WHERE repeats these terms with 'open' written inline (notify.SPEAKS).
SPEAKING_PG = "status = 'open' AND suppressed IS false AND backlog_opening IS DISTINCT FROM times_opened"
SPEAKING_SQLITE = "status = 'open' AND suppressed IS 0 AND backlog_opening IS NOT times_opened"
SNOOZED_WHERE = "status = 'snoozed'"
# Why a finding stopped being open (Finding.resolution, FindingEvent.resolution).
RESOLUTIONS = (
    "condition_cleared",  # the rule no longer sees the problem: someone fixed it
    "deal_closed",
    "deal_deleted",
    "rule_disabled",
    "expired",  # past the rule's look-back window and still not fixed
    "acknowledged",  # a person's action
    "snoozed",  # a person's action
)


class Finding(Base):
    """One problem on one CRM entity, for one rule: (account, rule, entity) is its identity.

    A finding is never duplicated: when the condition clears it resolves, and when it comes back
    the same row opens again, so its history stays in one place. Only one resolved longer than
    the retention (app/retention) is deleted, with its history.
    """

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("account_id", "rule", "entity_type", "entity_id", name="uq_findings_dedup"),
        Index("ix_findings_account_status", "account_id", "status"),
        Index("ix_findings_account_deal", "account_id", "deal_id"),
        # What one evaluation changed carries its timestamp: the outbox step finds it by this.
        Index("ix_findings_changed", "account_id", "rule", "updated_at"),
        Index("ix_findings_resolved", "status", "resolved_at"),  # the retention purge
        # The findings that can escalate or remind (app/findings/notify.SPEAKS): every sweep looks
        # for those that came due, and after a quiet connection nearly none of the account's is one.
        Index(
            "ix_findings_speaking",
            "account_id",
            "opened_at",
            postgresql_where=text(SPEAKING_PG),
            sqlite_where=text(SPEAKING_SQLITE),
        ),
        # The snoozed findings, whose snooze's end is a deal's moment (app/findings/due.py): few,
        # but every evaluation asks for those on its deals. Without it a tick of 1,000 deals read
        # their 3,000 findings to find none snoozed. A query uses it when it writes 'snoozed' inline.
        Index(
            "ix_findings_snoozed",
            "account_id",
            "deal_id",
            postgresql_where=text(SNOOZED_WHERE),
            sqlite_where=text(SNOOZED_WHERE),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    entity_type: Mapped[str] = mapped_column(String(16))  # deal | task | note
    entity_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    manager_id: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    # pending | open | acknowledged | snoozed | resolved | expired
    status: Mapped[str] = mapped_column(String(16))
    # When the condition began, by the CRM's own clock (task due, stage entered, last task closed).
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # resolved or expired
    # Why it is no longer open (one of RESOLUTIONS); None while it is pending or open.
    resolution: Mapped[str | None] = mapped_column(String(32))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    snoozed_by: Mapped[str | None] = mapped_column(String(100))
    snooze_reason: Mapped[str | None] = mapped_column(Text)
    # Another open finding inhibits this one (Alertmanager-style): it stays, but stays quiet.
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    times_opened: Mapped[int] = mapped_column(Integer, default=0)
    # The opening (times_opened) that was part of the backlog a new connection found: it is
    # announced in a summary, never by its own task, note, reminder or escalation.
    backlog_opening: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class FindingEvent(Base):
    """Every transition of a finding: from what, to what, who or what did it, and when."""

    __tablename__ = "finding_events"
    __table_args__ = (Index("ix_finding_events_finding", "finding_id", "id"), Index("ix_finding_events_at", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    # "sweep", "incremental", "admin", "user:<crm user id>", …
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    # For a transition out of "open": why, as one of RESOLUTIONS.
    resolution: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DueMoment(Base):
    """When the rules' verdict on a deal can next change with no new event (a task falls due, a
    grace period or a stage's limit runs out, a look-back window ends, a snooze ends): the
    scheduler's tick re-evaluates the deals whose moment has come, found through the index, so
    its cost follows how many are due, not the size of the account (app/findings/due.py).

    `deal_id` "" stands for the account's entities without a deal (calls nobody matched).
    `due_epoch` is seconds since 1970 (a float, so SQL can add a duration on both databases):
    exact where Python's business calendar computed it, an earlier bound where a sweep did, or an
    inbox batch's mark until the batch's evaluation runs (app/ingest/worker.EVALUATION_FALLBACK)."""

    __tablename__ = "rule_due"
    __table_args__ = (Index("ix_rule_due_account_due", "account_id", "due_epoch"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    deal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_epoch: Mapped[float] = mapped_column(Float)
