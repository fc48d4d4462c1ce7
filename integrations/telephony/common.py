"""Small helpers every PBX module uses."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl

from integrations.base import WebhookMalformed


def form_fields(body: bytes) -> dict[str, str]:
    """A flat urlencoded form; the last value wins for a repeated name. Raises WebhookMalformed."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict", max_num_fields=500
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookMalformed(f"not a form-encoded body: {exc}") from None
    out = dict(pairs)
    if any("\x00" in k or "\x00" in v for k, v in out.items()):
        raise WebhookMalformed("a field contains a NUL character")
    return out


def digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def as_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None
