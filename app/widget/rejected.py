"""Why a card call's token was refused, for every kind of token (the CRMs' and our own session
token): one exception, integrations.base.CardRejected, so the card has one error mapping."""

from __future__ import annotations

from integrations.base import CardRejected as TokenRejected

__all__ = ["TokenRejected"]
