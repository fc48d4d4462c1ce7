"""open deals index: the team table's and the funnel's open deals from one partial covering index

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05

The team table counts each manager's open deals and those without an open task; the funnel counts
the open deals and their amount per stage. Both read every open deal of the account: a sequential
scan of the whole deals table, closed deals included (half of them in the 100k-deal bench, most of
them in an account a few years old). A partial index on the open deals only, keyed by manager and
carrying the deal's id, pipeline, stage and price, makes both an index-only scan (and one manager's
own view a range of it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

OPEN = "NOT is_closed AND NOT is_deleted"


def upgrade() -> None:
    op.create_index(
        "ix_deals_open_by_manager",
        "deals",
        ["account_id", "responsible_user_id"],
        postgresql_include=["id", "pipeline_id", "stage_id", "price"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_deals_open_by_manager", table_name="deals")
