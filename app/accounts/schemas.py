from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from integrations.base import AccountConnection
from integrations.registry import CRM_ADAPTERS


class OAuthIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=200)
    client_secret: SecretStr = Field(min_length=1)
    redirect_uri: str = Field(min_length=1, max_length=500)
    code: SecretStr | None = None
    refresh_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_grant(self) -> OAuthIn:
        if (self.code is None) == (self.refresh_token is None):
            raise ValueError("give exactly one of code or refresh_token")
        return self


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Moscow)") from None
    return value


class _AccountFields(BaseModel):
    @field_validator("timezone", check_fields=False)
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return _check_timezone(value)

    @field_validator("region", check_fields=False)
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class AccountCreate(_AccountFields):
    # Fields beyond these belong to the CRM (its adapter's `connect` checks them).
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    # The schema names the CRMs (integrators' clients refuse a wrong one before sending it).
    crm: Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(CRM_ADAPTERS)})]
    base_url: AnyHttpUrl
    access_token: SecretStr | None = None
    oauth: OAuthIn | None = None
    timezone: str = "Europe/Moscow"
    region: str = Field(default="RU", min_length=2, max_length=2)
    language: Literal["ru", "en"] = "ru"
    # The rules document (as PUT /api/accounts/{id}/rules takes it), in force from the first sweep.
    rules: dict[str, Any] | None = None
    # Created paused: the backfill runs, but nothing is evaluated or written into the CRM until
    # PATCH {"paused": false}.
    paused: StrictBool = False

    @field_validator("crm")
    @classmethod
    def _known_crm(cls, value: str) -> str:
        if value not in CRM_ADAPTERS:
            raise ValueError(f"unsupported crm {value!r}; supported: {', '.join(sorted(CRM_ADAPTERS))}")
        return value

    def connection(self) -> AccountConnection | None:
        """The CRM's own way of connecting, from the fields only it knows; None: the generic fields."""
        return CRM_ADAPTERS[self.crm].connect(str(self.base_url), dict(self.model_extra or {}))

    @model_validator(mode="after")
    def _one_credential(self) -> AccountCreate:
        if self.crm not in CRM_ADAPTERS:
            return self  # _known_crm has said so
        if self.connection() is not None:
            if self.access_token is not None or self.oauth is not None:
                raise ValueError(f"{self.crm} connects with its own fields, not access_token or oauth")
            return self
        if (self.access_token is None) == (self.oauth is None):
            raise ValueError("give exactly one of access_token (long-lived token) or oauth")
        return self


class AccountPatch(_AccountFields):
    # Fields beyond these belong to the account's CRM (its adapter's `connect` checks them).
    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: AnyHttpUrl | None = None
    access_token: SecretStr | None = None
    oauth: OAuthIn | None = None
    timezone: str | None = None
    region: str | None = Field(default=None, min_length=2, max_length=2)
    language: Literal["ru", "en"] | None = None
    rotate_key: StrictBool = False  # the schema says boolean: "0" or "yes" is refused
    paused: StrictBool | None = Field(default=None, description="true pauses the account, false resumes it")

    @model_validator(mode="after")
    def _one_credential(self) -> AccountPatch:
        if self.access_token is not None and self.oauth is not None:
            raise ValueError("give at most one of access_token or oauth")
        return self


class SyncOut(BaseModel):
    state: str
    section: str | None
    counts: dict[str, Any]
    error: str | None
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class InboxLagOut(BaseModel):
    """How far the mirror is behind the deliveries accepted for the account."""

    pending: int = Field(description="inbox rows accepted and not applied yet (waiting for a retry included)")
    oldest_pending_at: datetime | None = Field(description="when the oldest of them was received")
    lag_seconds: float = Field(description="its age: how far behind the mirror is; 0 when current")


class AccountOut(BaseModel):
    id: int
    key: str
    name: str
    crm: str
    base_url: str
    timezone: str
    region: str
    language: str
    auth: str
    external_id: str | None
    subdomain: str | None
    status: str
    status_reason: str | None
    paused: bool
    # Since when what the rules find is the backlog of a new connection (or a full re-sync), to be
    # announced by `announce_backlog`; null once the sweep after the backfill has run.
    backlog_since: datetime | None
    hooks: dict[str, str]
    sync: SyncOut
    # Filled by GET /api/accounts/{id} (null in the other answers).
    inbox: InboxLagOut | None = None
    created_at: datetime
