"""Shapes of the reports (the managers and funnel reports are public contracts)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class ManagerFigures(BaseModel):
    model_config = ConfigDict(extra="allow")
    calls: int
    talk_seconds: int
    successful_calls: int
    incoming: int
    outgoing: int
    missed: int
    cards_changed: int
    calls_not_written: int = Field(description="successful calls beyond cards changed: talks that left no trace")
    calls_vs_cards_flag: bool
    open_findings: dict[str, int] = Field(description="open findings by rule, now")
    open_findings_total: int
    open_deals: int
    open_tasks: int
    overdue_tasks: int
    deals_without_task: int
    tasks_per_deal: float | None
    tasks_moved_without_contact: int
    first_contact_median_minutes: float | None = Field(
        description="speed to lead: the median working minutes from a deal's creation to its first contact "
        "(an outgoing or answered call with the client, or a note), over the deals created in the period that "
        "have had one; null when none"
    )


class ManagerRow(ManagerFigures):
    manager_id: str = Field(description="the CRM's own user id")
    name: str


class ManagersReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    day_from: date = Field(alias="from")
    day_to: date = Field(alias="to")
    timezone: str
    items: list[ManagerRow]
    totals: ManagerFigures


class StageRow(BaseModel):
    stage_id: str
    name: str
    open_deals: int
    amount: float
    avg_working_days: float | None
    entered: int
    moved_on: int
    stage_conversion: float | None


class ClosedFigures(BaseModel):
    won: int
    lost: int
    conversion: float | None
    won_amount: float
    avg_deal_size: float | None


class FunnelManager(ClosedFigures):
    manager_id: str
    name: str
    open_deals: int
    amount: float
    bottleneck_stage_id: str | None
    bottleneck_stage_name: str | None


class FunnelReport(ClosedFigures):
    model_config = ConfigDict(populate_by_name=True)
    pipeline_id: str
    day_from: date = Field(alias="from")
    day_to: date = Field(alias="to")
    stages: list[StageRow]
    avg_funnel_working_days: float | None
    by_manager: list[FunnelManager]
    by_client: dict[str, ClosedFigures]
