from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr


class CardFinding(BaseModel):
    """One warning as the card shows it: already phrased in the reader's language."""

    id: int
    rule: str
    title: str
    message: str
    severity: str
    since: datetime
    status: str


class CardFindings(BaseModel):
    deal_id: str
    lang: str
    items: list[CardFinding]


class CardSnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # 1 hour / until the next working morning / 1 week: the choices the card offers.
    preset: Literal["1h", "tomorrow", "1w"]


class WidgetConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_secret: SecretStr | None = Field(
        default=None, min_length=8, description="the amoCRM integration's secret key (signs the widget tokens)")
    audience: HttpUrl | None = Field(
        default=None, description="the tokens' `aud`: the origin of the integration's redirect_uri")


class WidgetConfigOut(BaseModel):
    account_id: int
    # Where the secret comes from: "widget" (set here), "oauth" (the account's OAuth client), or None.
    secret_source: Literal["widget", "oauth"] | None
    audience: str
