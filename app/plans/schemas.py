"""The plan's JSON: `{"managers": {"<crm user id>": {"revenue": n, "won_deals": n}}}`."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Years 1900-2099: a plan outside them is a typo, and year 1 has no 90 days of history before it.
MONTH_PATTERN = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$"
MANAGER_ID_PATTERN = r"^[0-9A-Za-z_:.\-]{1,64}$"
MAX_REVENUE = 1e13
MAX_WON_DEALS = 1_000_000


class ManagerPlan(BaseModel):
    # strict: `true` is not 1 deal and "5" is not 5 roubles.
    model_config = ConfigDict(extra="forbid", strict=True)
    revenue: float | None = Field(None, ge=0, le=MAX_REVENUE, allow_inf_nan=False)
    won_deals: int | None = Field(None, ge=0, le=MAX_WON_DEALS)

    @model_validator(mode="after")
    def _something(self) -> ManagerPlan:
        if self.revenue is None and self.won_deals is None:
            raise ValueError("a manager's plan sets revenue, won_deals or both")
        return self


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    managers: dict[str, ManagerPlan] = Field(
        description="per manager (the CRM's user id): revenue and/or won deals for the month; "
        "a PUT replaces the month's whole plan"
    )

    @field_validator("managers")
    @classmethod
    def _ids(cls, managers: dict[str, ManagerPlan]) -> dict[str, ManagerPlan]:
        bad = [m for m in managers if not re.fullmatch(MANAGER_ID_PATTERN, m)]
        if bad:
            raise ValueError(f"not a CRM user id: {bad[0]!r}")
        if len(managers) > 1000:
            raise ValueError("at most 1000 managers in one plan")
        return managers


class PlanOut(BaseModel):
    month: str
    managers: dict[str, ManagerPlan]
    warnings: list[str] = Field(
        default_factory=list, description="managers the mirror does not know (kept: it may learn them later)"
    )
