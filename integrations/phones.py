"""Phone numbers in one form (E.164) so that a CRM card and a PBX call can meet.

`8 912 …`, `+7 (912) …` and `7912…` are the same Russian number; phonenumbers knows the
national trunk prefixes, we only supply the account's default region.
"""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str | None, region: str = "RU") -> str | None:
    """The number in E.164, or None when it is not a possible phone number."""
    if not raw:
        return None
    try:
        parsed = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_all(raws: list[str], region: str = "RU") -> tuple[str, ...]:
    """Normalized, deduplicated, in first-seen order; unparseable entries are dropped."""
    seen: dict[str, None] = {}
    for raw in raws:
        number = to_e164(raw, region)
        if number:
            seen.setdefault(number, None)
    return tuple(seen)
