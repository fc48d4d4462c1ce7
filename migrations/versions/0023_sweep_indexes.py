"""sweep indexes: escalations and reminders read only the findings that can speak; moved open tasks

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06

Every sweep asks the outbox for the escalations and reminders that came due with time alone
(app/findings/notify.enqueue). Only an open finding that is neither suppressed nor part of the
connection's backlog can escalate or remind, but the statements read every finding of the account
to find those: 0.3–0.5 s each at 1M deals, where after a quiet connection nearly none qualifies. A
partial index on exactly those findings, by account and opening time, makes both a range of it.

task_rescheduled_without_contact reads the open tasks whose due time was moved (4 % of the open
tasks in the bench), which took a scan of every task of the account. A small partial index of those
tasks, carrying the columns the rule reads, makes it an index-only scan (5 MB at 1M deals).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

SPEAKING_PG = "status = 'open' AND suppressed IS false AND backlog_opening IS DISTINCT FROM times_opened"
SPEAKING_SQLITE = "status = 'open' AND suppressed IS 0 AND backlog_opening IS NOT times_opened"
MOVED = "due_moved_at IS NOT NULL AND NOT is_completed AND NOT is_deleted"
MOVED_INCLUDE = ["id", "responsible_user_id", "due_moved_at", "due_at", "previous_due_at", "created_at"]


def upgrade() -> None:
    op.create_index(
        "ix_findings_speaking",
        "findings",
        ["account_id", "opened_at"],
        postgresql_where=sa.text(SPEAKING_PG),
        sqlite_where=sa.text(SPEAKING_SQLITE),
    )
    op.create_index(
        "ix_tasks_moved",
        "tasks",
        ["account_id", "deal_id"],
        postgresql_include=MOVED_INCLUDE,
        postgresql_where=sa.text(MOVED),
        sqlite_where=sa.text(MOVED),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_moved", table_name="tasks")
    op.drop_index("ix_findings_speaking", table_name="findings")
