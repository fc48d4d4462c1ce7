"""next due: when the rules' verdict on each deal can next change with no event (the tick's index)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_due",
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("deal_id", sa.String(64), primary_key=True),
        sa.Column("due_epoch", sa.Float(), nullable=False),
    )
    op.create_index("ix_rule_due_account_due", "rule_due", ["account_id", "due_epoch"])
    # Accounts are swept nightly now and ticked in between: the next sweep sets their moments.
    op.execute("UPDATE accounts SET next_sweep_at = NULL")


def downgrade() -> None:
    op.drop_index("ix_rule_due_account_due", table_name="rule_due")
    op.drop_table("rule_due")
