"""retention: the indexes the purge of old inbox, outbox and finding rows reads

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inbox_events_processed", "inbox_events", ["status", "processed_at"])
    op.create_index("ix_outbox_sent", "outbox", ["status", "sent_at"])
    op.create_index("ix_findings_resolved", "findings", ["status", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_findings_resolved", table_name="findings")
    op.drop_index("ix_outbox_sent", table_name="outbox")
    op.drop_index("ix_inbox_events_processed", table_name="inbox_events")
