"""Custom field values as the CRMs send them, reduced to one JSON scalar each.

The mirror keeps a deal's configured custom fields (DealUpserted.custom_fields); what a value
means (a date, an amount, a flag) is decided by whoever reads it (app/payments), since the
wire rarely says the field's type: an amoCRM webhook sends every value as a string, API v4
sends a date as unix seconds, Bitrix24 a date as an ISO string and a flag as "Y"/"N".
"""

from __future__ import annotations

from typing import Any

# Longer values are cut: the mirror keeps dates, amounts and flags, not documents.
MAX_CHARS = 200


def scalar(value: Any) -> str | int | float | bool | None:
    """One value: the first of a list (a multiple field), strings trimmed; None when empty or
    not a scalar (a file, a nested object)."""
    if isinstance(value, list | tuple):
        value = next((v for v in value if scalar(v) is not None), None)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        value = value.strip()
        return value[:MAX_CHARS] or None
    return None


def collect(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """(field id, raw value) pairs → {field id: scalar}, fields without a value left out."""
    out: dict[str, Any] = {}
    for field_id, raw in pairs:
        if field_id in (None, ""):
            continue
        value = scalar(raw)
        if value is not None:
            out.setdefault(str(field_id), value)
    return out
