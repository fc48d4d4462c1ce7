"""honest resolution: why each finding stopped being open, on the finding and in its history

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The history's free-text reasons of automatic resolutions, as the codes they become.
_CODES = {
    "condition cleared": "condition_cleared",
    "deal closed": "deal_closed",
    "deal deleted": "deal_deleted",
    "rule disabled": "rule_disabled",
}


def upgrade() -> None:
    op.add_column("findings", sa.Column("resolution", sa.String(length=32), nullable=True))
    op.add_column("finding_events", sa.Column("resolution", sa.String(length=32), nullable=True))
    # What the history already says: the automatic resolutions by their reason, and a person's
    # acknowledgement or snooze by the state it left.
    whens = " ".join(f"WHEN '{text}' THEN '{code}'" for text, code in _CODES.items())
    op.execute(
        f"UPDATE finding_events SET resolution = CASE reason {whens} END "
        "WHERE to_status = 'resolved' AND actor NOT LIKE 'user:%'"
    )
    op.execute("UPDATE finding_events SET resolution = to_status WHERE to_status IN ('acknowledged', 'snoozed')")
    op.execute(
        "UPDATE findings SET resolution = (SELECT e.resolution FROM finding_events e "
        "WHERE e.finding_id = findings.id ORDER BY e.id DESC LIMIT 1) "
        "WHERE status IN ('resolved', 'acknowledged', 'snoozed')"
    )


def downgrade() -> None:
    op.drop_column("finding_events", "resolution")
    op.drop_column("findings", "resolution")
