"""digest: per-account settings of the morning digest (channels, local time, sealed bot token)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_settings",
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("send_at", sa.String(5), nullable=False),
        sa.Column("telegram_chat_id", sa.String(64), nullable=True),
        sa.Column("telegram_token", sa.LargeBinary(), nullable=True),
        sa.Column("language", sa.String(5), nullable=True),
        sa.Column("crm", sa.Boolean(), nullable=False),
        sa.Column("crm_user_id", sa.String(64), nullable=True),
        sa.Column("email", sa.JSON(), nullable=True),
        sa.Column("smtp_password", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("digest_settings")
