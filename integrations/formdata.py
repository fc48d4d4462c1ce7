"""PHP-style bracket forms (`leads[status][0][id]=1`), as amoCRM and Bitrix24 post them."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 10
MAX_FIELDS = 20_000


class FormError(ValueError):
    pass


def parse_bracket_form(body: bytes) -> dict[str, Any]:
    """Nested dicts of strings. Raises FormError on anything a real sender would not post."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict",
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"not a form-encoded body: {exc}") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise FormError("a field contains a NUL character")
        match = _KEY.match(key)
        if not match:
            raise FormError(f"malformed field name: {key[:80]!r}")
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_DEPTH:
            raise FormError("field nested too deep")
        node = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FormError(f"field {key[:80]!r} clashes with a scalar")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise FormError(f"field {key[:80]!r} clashes with a nested field")
        node[path[-1]] = value
    return root


def items(node: Any) -> list[dict[str, Any]]:
    """The indexed entries (`[0]`, `[1]`, …) of a list-like node, in index order."""
    if not isinstance(node, dict):
        return []
    keyed = [(k, v) for k, v in node.items() if isinstance(v, dict)]
    keyed.sort(key=lambda kv: (0, int(kv[0])) if kv[0].isdigit() else (1, kv[0]))
    return [v for _, v in keyed]
