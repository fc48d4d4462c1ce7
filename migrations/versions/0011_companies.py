"""companies: client companies in the mirror, and the deal's company (ABC/XYZ by company)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("responsible_user_id", sa.String(length=64), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_companies_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_companies")),
    )
    with op.batch_alter_table("deals") as batch:
        batch.add_column(sa.Column("company_id", sa.String(length=64), nullable=True))
    op.create_index("ix_deals_company", "deals", ["account_id", "company_id"])


def downgrade() -> None:
    op.drop_index("ix_deals_company", table_name="deals")
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("company_id")
    op.drop_table("companies")
