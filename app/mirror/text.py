"""Text folding for comparisons the database cannot do alike on SQLite and PostgreSQL."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,!?;:-–—…()\"'«»"


def fold(text: str | None) -> str | None:
    """ "  Ок!! " → "ок", "Связался." → "связался", "Перезвонить  завтра" → "перезвонить завтра"."""
    if text is None:
        return None
    return _SPACE.sub(" ", text.lower().replace("ё", "е")).strip(_EDGE_PUNCT)
