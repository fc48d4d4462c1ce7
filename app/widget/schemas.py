from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, UrlConstraints


class CardFinding(BaseModel):
    """One warning as the card shows it: already phrased in the reader's language."""

    id: int
    rule: str
    title: str
    message: str
    severity: str
    since: datetime
    status: str
    # A snoozed finding: until when, phrased for the card ("до пн 09:00") in the account's time zone.
    snoozed_until: datetime | None = None
    until_label: str | None = None


class CardFindings(BaseModel):
    deal_id: str
    lang: str
    items: list[CardFinding]
    # The deal's snoozed findings, for the card's "1 отложено до пн 09:00" line.
    snoozed: list[CardFinding] = Field(default_factory=list)
    # The snooze menu's labels by preset, with the real time where "until tomorrow" is not tomorrow.
    snooze_labels: dict[str, str] = Field(default_factory=dict)


class CardSnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # 1 hour / until the next working morning / 1 week: the choices the card offers.
    preset: Literal["1h", "tomorrow", "1w"]


class WidgetConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_secret: SecretStr | None = Field(
        default=None, min_length=8, description="the amoCRM integration's secret key (signs the widget tokens)"
    )
    # Bounded by its column (widget_configs.audience, 500 characters): longer was a 500 on PostgreSQL.
    audience: Annotated[HttpUrl, UrlConstraints(max_length=500)] | None = Field(
        default=None, description="the tokens' `aud`: the origin of the integration's redirect_uri"
    )


class WidgetConfigOut(BaseModel):
    account_id: int
    # Where the secret comes from: "widget" (set here), "oauth" (the account's OAuth client), or None.
    secret_source: Literal["widget", "oauth"] | None
    audience: str
