"""Unix timestamps as vendors send them: amoCRM and most PBXs write seconds, as int or string."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def from_unix(value: Any) -> datetime | None:
    """Unix seconds (int, float or string) as an aware UTC datetime; 0 and blanks mean "none",
    and so does anything unparseable (a vendor's garbage must not fail the whole event)."""
    if value in (None, "", 0, "0"):
        return None
    try:
        return datetime.fromtimestamp(int(float(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
