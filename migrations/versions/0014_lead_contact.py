"""speed to lead: the index lead_not_contacted and the first-contact report find new deals by

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deals_created", "deals", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_deals_created", table_name="deals")
