"""Small pieces of Bitrix24's wire format shared by the client, the parser and the emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

DEAL_TYPE_ID = 2  # entityTypeId / OWNER_TYPE_ID of a deal
CONTACT_TYPE_ID = 3
PAGE_SIZE = 50
MAX_BATCH = 50
# Mirror ids of the two kinds of "task": Bitrix24 numbers activities and tasks separately.
ACTIVITY_PREFIX = "act:"
TASK_PREFIX = "task:"


def php_query(params: dict[str, Any]) -> str:
    """PHP's http_build_query: nested dicts and lists as bracketed keys (`filter[>ID]=5`), the way a
    `batch` command carries its parameters."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}[{k}]", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif value is None:
            pairs.append((prefix, ""))
        elif isinstance(value, bool):
            pairs.append((prefix, "Y" if value else "N"))
        else:
            pairs.append((prefix, str(value)))

    for key, value in params.items():
        walk(str(key), value)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


def when(value: Any) -> datetime | None:
    """Bitrix24 stamps ISO 8601 with the portal's offset ("2025-11-17T12:00:00+03:00")."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def sid(value: Any) -> str | None:
    if value is None or value == "" or value is False:
        return None
    return str(value)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")
