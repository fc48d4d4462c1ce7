from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator


class TelephonyIn(BaseModel):
    """The provider's secrets as top-level fields (Mango: api_key, api_salt), plus who is who."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"example": {"api_key": "…", "api_salt": "…", "extensions": {"101": "5512345"}}},
    )
    extensions: dict[str, str | int] = Field(default_factory=dict, description="PBX extension or login → CRM user id")
    log_calls: StrictBool = Field(default=False, description="write each finished call into the matched card")

    @field_validator("extensions")
    @classmethod
    def _extensions(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for ext, user in value.items():
            if not ext.strip() or len(ext) > 100 or str(user).strip() == "" or len(str(user)) > 64:
                raise ValueError(f"extension {ext[:20]!r}: both the extension and the CRM user id must be set")
        return value

    def secrets(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TelephonyOut(BaseModel):
    provider: str
    secrets_set: list[str] = Field(description="which secrets are stored; their values are never shown")
    options: dict[str, str] = Field(default_factory=dict, description="settings that are not secret (a time zone)")
    extensions: dict[str, str]
    log_calls: bool
    hook_url: str
    updated_at: datetime


class CallOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    provider: str
    provider_call_id: str
    direction: str | None
    client_number: str | None
    line_number: str | None
    manager_ref: str | None
    manager_id: str | None
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    talk_seconds: int | None
    duration_seconds: int | None
    status: str | None
    is_final: bool
    recording_url: str | None
    contact_id: str | None
    deal_id: str | None
    match_source: str | None


class CallStatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    manager_id: str
    name: str
    day: date
    calls: int
    talk_seconds: int
    successful: int
    incoming: int
    outgoing: int
    missed: int
    cards_changed: int
