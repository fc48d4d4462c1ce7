"""Why a widget call's token was refused, for both kinds of token (amoCRM's and our own)."""

from __future__ import annotations


class TokenRejected(Exception):
    """The widget's token is not acceptable; `code` tells the widget which message to show."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code  # token_missing | token_invalid | token_expired | token_replayed | widget_not_configured
        self.detail = detail
