"""deal fields: the custom fields of deals an account names (expected payments), and the mirror's copy

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("deal_fields", sa.JSON(), nullable=True))
    with op.batch_alter_table("deals") as batch:
        batch.add_column(sa.Column("custom_fields", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("custom_fields")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("deal_fields")
