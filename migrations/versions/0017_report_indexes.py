"""report_indexes: the plan report's calls read from the index alone

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05

ix_calls_started (account, started_at) already carried what the team table reads of a call; the
plan report's first contacts also read the call's deal and number (a deal, or a number, counts
once). Without them every call of the 120-day window was a heap fetch (about 15,000 pages read in
the 100k-deal bench); with them it is an index-only scan. The index is rebuilt wider rather than
doubled: one index to maintain on every call written.

ix_stage_history_entered likewise gains the move's pipeline: the plan report's stage milestones
match (pipeline, stage), and without it a period of moves was read from the table.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NARROW = ["manager_id", "direction", "status", "talk_seconds", "is_final"]
MOVES = ["deal_id", "stage_id", "by_user_id", "id"]


def upgrade() -> None:
    op.drop_index("ix_calls_started", table_name="calls")
    op.create_index(
        "ix_calls_started",
        "calls",
        ["account_id", "started_at"],
        postgresql_include=[*NARROW, "deal_id", "client_number"],
    )
    op.drop_index("ix_stage_history_entered", table_name="stage_history")
    op.create_index(
        "ix_stage_history_entered",
        "stage_history",
        ["account_id", "entered_at"],
        postgresql_include=[*MOVES, "pipeline_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_stage_history_entered", table_name="stage_history")
    op.create_index("ix_stage_history_entered", "stage_history", ["account_id", "entered_at"], postgresql_include=MOVES)
    op.drop_index("ix_calls_started", table_name="calls")
    op.create_index("ix_calls_started", "calls", ["account_id", "started_at"], postgresql_include=NARROW)
