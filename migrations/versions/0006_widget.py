"""widget: integration secrets for the amoCRM widget, and the disposable-token replay cache

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "widget_configs",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("audience", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_widget_configs_account_id_accounts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", name="pk_widget_configs"),
    )
    op.create_table(
        "widget_token_uses",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("jti", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_widget_token_uses_account_id_accounts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "jti", name="pk_widget_token_uses"),
    )
    op.create_index("ix_widget_token_uses_expires_at", "widget_token_uses", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_widget_token_uses_expires_at", table_name="widget_token_uses")
    op.drop_table("widget_token_uses")
    op.drop_table("widget_configs")
