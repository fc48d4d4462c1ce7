from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime, utcnow


class WidgetConfig(Base):
    """The amoCRM integration secret that signs the widget's disposable tokens, for accounts
    that do not connect through OAuth (whose client_secret is that secret already)."""

    __tablename__ = "widget_configs"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    # Fernet ciphertext of {"client_secret": ...}, sealed like every other credential.
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The `aud` amoCRM puts in the tokens: the origin of the integration's redirect_uri.
    audience: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class WidgetTokenUse(Base):
    """Each disposable token's jti, kept until the token expires, so a replay is refused by every
    process that shares the database (an in-memory cache would forget across processes and restarts)."""

    __tablename__ = "widget_token_uses"
    __table_args__ = (Index("ix_widget_token_uses_expires_at", "expires_at"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    jti: Mapped[str] = mapped_column(String(100), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
