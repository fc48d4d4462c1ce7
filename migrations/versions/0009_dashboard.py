"""dashboard: read-only links, and the indexes the reports' period filters and joins use

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_links",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("manager_id", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_dashboard_links_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_dashboard_links_token_hash")),
    )
    op.create_index("ix_dashboard_links_account", "dashboard_links", ["account_id", "created_at"])
    # The reports select a period of calls, stage entries, closed deals and finding events.
    # On PostgreSQL they cover what the reports read: a month of calls is an index-only scan.
    op.create_index(
        "ix_calls_started",
        "calls",
        ["account_id", "started_at"],
        postgresql_include=["manager_id", "direction", "status", "talk_seconds", "is_final"],
    )
    op.create_index(
        "ix_stage_history_entered",
        "stage_history",
        ["account_id", "entered_at"],
        postgresql_include=["deal_id", "stage_id", "by_user_id", "id"],
    )
    op.create_index("ix_deals_closed", "deals", ["account_id", "pipeline_id", "closed_at"])
    op.create_index("ix_finding_events_at", "finding_events", ["at"])
    op.create_index("ix_deal_contacts_contact", "deal_contacts", ["account_id", "contact_id"])
    # Cards changed: a period's notes, tasks set and tasks closed.
    op.create_index(
        "ix_notes_created", "notes", ["account_id", "created_at"], postgresql_include=["created_by", "deal_id", "kind"]
    )
    op.create_index(
        "ix_tasks_created", "tasks", ["account_id", "created_at"], postgresql_include=["created_by", "deal_id"]
    )
    op.create_index(
        "ix_tasks_completed",
        "tasks",
        ["account_id", "completed_at"],
        postgresql_include=["responsible_user_id", "deal_id"],
        postgresql_where=sa.text("completed_at IS NOT NULL"),
        sqlite_where=sa.text("completed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_completed", table_name="tasks")
    op.drop_index("ix_tasks_created", table_name="tasks")
    op.drop_index("ix_notes_created", table_name="notes")
    op.drop_index("ix_deal_contacts_contact", table_name="deal_contacts")
    op.drop_index("ix_finding_events_at", table_name="finding_events")
    op.drop_index("ix_deals_closed", table_name="deals")
    op.drop_index("ix_stage_history_entered", table_name="stage_history")
    op.drop_index("ix_calls_started", table_name="calls")
    op.drop_index("ix_dashboard_links_account", table_name="dashboard_links")
    op.drop_table("dashboard_links")
