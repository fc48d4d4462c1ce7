"""quiet first connect: paused accounts, the backlog a new connection finds, grouped outbox actions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("backlog_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("backlog_opening", sa.Integer(), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("details")
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("backlog_opening")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("backlog_since")
        batch.drop_column("paused")
