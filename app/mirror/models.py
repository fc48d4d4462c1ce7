"""The CRM-neutral mirror: just enough of each CRM to run the rules.

Rows are keyed by (account_id, the CRM's own id as text). References between entities are
CRM ids, not foreign keys: a task may arrive before its deal, and the mirror must take it.
`source_updated_at` is the CRM's own modification time; a change older than it is stale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UtcDateTime, utcnow

ACCOUNT_FK = "accounts.id"


def _account_pk() -> Mapped[int]:
    return mapped_column(ForeignKey(ACCOUNT_FK, ondelete="CASCADE"), primary_key=True)


class User(Base):
    __tablename__ = "users"
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(300))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Pipeline(Base):
    __tablename__ = "pipelines"
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    sort: Mapped[int] = mapped_column(Integer, default=0)
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False)


class Stage(Base):
    __tablename__ = "stages"
    account_id: Mapped[int] = _account_pk()
    pipeline_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # amoCRM's won/lost ids (142/143) repeat in every pipeline, hence the pipeline in the key.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    sort: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(8), default="open")  # open | won | lost


class Deal(Base):
    __tablename__ = "deals"
    __table_args__ = (
        Index("ix_deals_open", "account_id", "is_closed", "is_deleted"),
        Index("ix_deals_responsible", "account_id", "responsible_user_id"),
        Index("ix_deals_closed", "account_id", "pipeline_id", "closed_at"),
        Index("ix_deals_company", "account_id", "company_id"),
        # New deals: lead_not_contacted judges the last working day's, the reports a period's.
        Index("ix_deals_created", "account_id", "created_at"),
        # The open deals, per manager: the team table's deals without a task and the funnel's stage
        # counts read them from this index alone on PostgreSQL (closed deals, most of an old
        # account's, are not in it).
        Index(
            "ix_deals_open_by_manager",
            "account_id",
            "responsible_user_id",
            postgresql_include=["id", "pipeline_id", "stage_id", "price"],
            postgresql_where=text("NOT is_closed AND NOT is_deleted"),
            sqlite_where=text("NOT is_closed AND NOT is_deleted"),
        ),
    )
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(500))
    pipeline_id: Mapped[str | None] = mapped_column(String(64))
    stage_id: Mapped[str | None] = mapped_column(String(64))
    stage_entered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # "event": from the CRM's own stage-change record; "estimate": from created_at or first sight.
    stage_entered_source: Mapped[str | None] = mapped_column(String(16))
    price: Mapped[float | None] = mapped_column(Float)
    responsible_user_id: Mapped[str | None] = mapped_column(String(64))
    # The client company (the ABC/XYZ report by company), when the CRM names one.
    company_id: Mapped[str | None] = mapped_column(String(64))
    # The account's configured custom fields of the deal only (app/mirror/fields.py): {field id:
    # {"value", "set_at"}}; None when it has none of them.
    custom_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    is_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    mirrored_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class DealContact(Base):
    __tablename__ = "deal_contacts"
    # "Has this client an earlier deal?" (the funnel's new vs returning clients) goes by contact.
    __table_args__ = (Index("ix_deal_contacts_contact", "account_id", "contact_id"),)
    account_id: Mapped[int] = _account_pk()
    deal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class StageHistory(Base):
    """Every stage entry we know of, from the CRM's event log and from status webhooks."""

    __tablename__ = "stage_history"
    __table_args__ = (
        Index("ix_stage_history_deal", "account_id", "deal_id", "entered_at"),
        Index(
            "ix_stage_history_entered",
            "account_id",
            "entered_at",
            # The pipeline too: the plan report's stage milestones match (pipeline, stage).
            postgresql_include=["deal_id", "stage_id", "by_user_id", "id", "pipeline_id"],
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey(ACCOUNT_FK, ondelete="CASCADE"))
    deal_id: Mapped[str] = mapped_column(String(64))
    pipeline_id: Mapped[str | None] = mapped_column(String(64))
    stage_id: Mapped[str] = mapped_column(String(64))
    from_stage_id: Mapped[str | None] = mapped_column(String(64))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    by_user_id: Mapped[str | None] = mapped_column(String(64))


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_deal", "account_id", "deal_id"),
        Index("ix_tasks_open_due", "account_id", "is_completed", "due_at"),
        # The reports' cards changed: tasks set, and tasks closed, in a period.
        Index("ix_tasks_created", "account_id", "created_at", postgresql_include=["created_by", "deal_id"]),
        Index(
            "ix_tasks_completed",
            "account_id",
            "completed_at",
            postgresql_include=["responsible_user_id", "deal_id"],
            postgresql_where=text("completed_at IS NOT NULL"),
            sqlite_where=text("completed_at IS NOT NULL"),
        ),
        # "Does this deal have an open task?" is asked of every open deal in every sweep.
        Index(
            "ix_tasks_open_by_deal",
            "account_id",
            "deal_id",
            postgresql_where=text("NOT is_completed AND NOT is_deleted"),
            sqlite_where=text("NOT is_completed AND NOT is_deleted"),
        ),
        # The open tasks whose due time was moved, with what task_rescheduled_without_contact reads
        # of them: the sweep's index-only scan of a few percent of the tasks, not a scan of them all.
        Index(
            "ix_tasks_moved",
            "account_id",
            "deal_id",
            postgresql_include=["id", "responsible_user_id", "due_moved_at", "due_at", "previous_due_at", "created_at"],
            postgresql_where=text("due_moved_at IS NOT NULL AND NOT is_completed AND NOT is_deleted"),
            sqlite_where=text("due_moved_at IS NOT NULL AND NOT is_completed AND NOT is_deleted"),
        ),
    )
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deal_id: Mapped[str | None] = mapped_column(String(64))
    entity_type: Mapped[str | None] = mapped_column(String(16))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    type_id: Mapped[str | None] = mapped_column(String(64))
    responsible_user_id: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The due time before the latest move, and when it moved: the rescheduling rule reads these.
    previous_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    due_moved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    is_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result_text: Mapped[str | None] = mapped_column(Text)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    source_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Note(Base):
    __tablename__ = "notes"
    __table_args__ = (
        Index("ix_notes_deal", "account_id", "deal_id", "created_at"),
        # The reports' cards changed: the notes of a period, by who wrote them.
        Index("ix_notes_created", "account_id", "created_at", postgresql_include=["created_by", "deal_id", "kind"]),
    )
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    # Lower-cased, ё→е, whitespace and edge punctuation squeezed: what rules compare
    # (SQLite's lower() only knows ASCII, so Cyrillic must be folded before it is stored).
    text_norm: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Contact(Base):
    __tablename__ = "contacts"
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(500))
    responsible_user_id: Mapped[str | None] = mapped_column(String(64))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    source_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Company(Base):
    """A client company: its name and manager (its phones stay in the CRM)."""

    __tablename__ = "companies"
    account_id: Mapped[int] = _account_pk()
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(500))
    responsible_user_id: Mapped[str | None] = mapped_column(String(64))
    # A tombstone: a deleted company keeps its name for the revenue its past deals still carry,
    # and an older read of it (a late update) cannot bring it back.
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    source_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ContactPhone(Base):
    __tablename__ = "contact_phones"
    __table_args__ = (Index("ix_contact_phones_phone", "account_id", "phone"),)
    account_id: Mapped[int] = _account_pk()
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)  # E.164
