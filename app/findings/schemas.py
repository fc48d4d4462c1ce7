from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["pending", "open", "acknowledged", "snoozed", "resolved", "expired"]
# Why a finding is no longer open (app/findings/models.RESOLUTIONS).
Resolution = Literal[
    "condition_cleared", "deal_closed", "deal_deleted", "rule_disabled", "expired", "acknowledged", "snoozed"
]


class FindingOut(BaseModel):
    id: int
    rule: str
    title: str
    deal_id: str | None
    manager_id: str | None
    entity_type: str
    entity_id: str
    severity: str
    message: str
    details: dict[str, Any]
    status: Status
    suppressed: bool
    started_at: datetime
    opened_at: datetime | None
    resolved_at: datetime | None = Field(description="when it resolved or expired")
    resolution: Resolution | None = Field(
        description="why it is no longer open: condition_cleared (someone fixed it), deal_closed, deal_deleted, "
        "rule_disabled, expired (past the rule's look-back window, not fixed), or a person's action "
        "(acknowledged, snoozed); null while pending or open"
    )
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    snoozed_by: str | None
    snooze_reason: str | None
    times_opened: int
    # This opening was already there when the account connected (or was re-synced): it reached the
    # CRM in a summary (announce_backlog), not as a task and a note of its own.
    backlog: bool = False
    link: str


class FindingPage(BaseModel):
    items: list[FindingOut]
    total: int
    limit: int
    offset: int


class HistoryOut(BaseModel):
    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    resolution: Resolution | None = Field(default=None, description="for a step out of open: why")


class FindingDetail(FindingOut):
    history: list[HistoryOut]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(default=None, max_length=100, description="who acknowledged (a CRM user id or a name)")
    reason: str | None = Field(default=None, max_length=1000)


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: datetime = Field(description="ISO 8601 with a time zone; must be in the future")
    reason: str | None = Field(default=None, max_length=1000)
    by: str | None = Field(default=None, max_length=100)


class SweepOut(BaseModel):
    opened: int
    resolved: int
    expired: int = Field(description="past their rule's look-back window and not fixed: never counted as resolved")
    open: int
