"""sweep indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.create_index("ix_findings_changed", ["account_id", "rule", "updated_at"], unique=False)

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_open_by_deal",
            ["account_id", "deal_id"],
            unique=False,
            postgresql_where=sa.text("NOT is_completed AND NOT is_deleted"),
            sqlite_where=sa.text("NOT is_completed AND NOT is_deleted"),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_tasks_open_by_deal",
            postgresql_where=sa.text("NOT is_completed AND NOT is_deleted"),
            sqlite_where=sa.text("NOT is_completed AND NOT is_deleted"),
        )

    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_index("ix_findings_changed")
