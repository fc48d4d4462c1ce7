"""PHP-style bracket forms (`leads[status][0][id]=1`), as amoCRM and Bitrix24 post them."""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 10
MAX_FIELDS = 20_000


class FormError(ValueError):
    pass


def parse_bracket_form(body: bytes) -> dict[str, Any]:
    """Nested dicts of strings. Raises FormError on anything a real sender would not post.

    The usual post (ASCII, percent-encoded, names of plain words and brackets) takes one pass
    over the fields with str methods; anything else takes the general parser below. Both give
    the same tree and refuse the same bodies (tests/integrations/test_formdata.py)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return _parse_general(body)
    norm = text.replace("%5B", "[").replace("%5D", "]")
    if "\x00" in text or _PLAIN_FORM.fullmatch(norm) is None:
        return _parse_general(body)
    _check_escapes(text)  # what the general parser's strict UTF-8 decoding would refuse
    if text.count("&") >= MAX_FIELDS:
        raise FormError("not a form-encoded body: Max number of fields exceeded")
    root: dict[str, Any] = {}
    # The container each name prefix ("leads[update][0]") leads to: the fields of one record
    # share it, so the walk from the root is done once per record, not once per field. A
    # container, once in the tree, stays there (a value put over it is refused), so what the
    # cache says is what the walk would find; a prefix's depth is checked on its first walk.
    parents: dict[str, dict[str, Any]] = {"": root}
    for field in norm.split("&"):
        key, _, value = field.partition("=")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            # _check_escapes has found every run of escapes to be UTF-8.
            value = _ESCAPES.sub(_unescape, value)
        prefix, bracket, last = key.rpartition("[")
        node = parents.get(prefix)
        if node is None:
            # The plain pattern admits only "name[part][part]…": the parts are what lies between.
            name, _, rest = key.partition("[")
            path = [name, *rest[:-1].split("][")]
            if len(path) > MAX_DEPTH:
                raise FormError("field nested too deep")
            node = root
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise FormError(f"field {key[:80]!r} clashes with a scalar")
                node = child
            parents[prefix] = node
        if bracket:
            last = last[:-1]
        if isinstance(node.get(last), dict):
            raise FormError(f"field {key[:80]!r} clashes with a nested field")
        node[last] = value
    return root


# A run of percent escapes (decoded as one: a multi-byte character is written as one run).
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _unescape(run: re.Match[str]) -> str:
    return bytes.fromhex(run.group().replace("%", "")).decode("utf-8")


def _put(root: dict[str, Any], key: str, path: list[str], value: str) -> None:
    """Puts one field's value at its path in the tree: both parsers build the same tree and refuse
    the same clashes (a fuzz test holds them to it)."""
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


def _parse_general(body: bytes) -> dict[str, Any]:
    """parse_bracket_form for any body: urllib's parser, then the names split by regex."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=MAX_FIELDS)
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
        _put(root, key, path, value)
    return root


def items(node: Any) -> list[dict[str, Any]]:
    """The indexed entries (`[0]`, `[1]`, …) of a list-like node, in index order."""
    if not isinstance(node, dict):
        return []
    keyed = [(k, v) for k, v in node.items() if isinstance(v, dict)]
    keyed.sort(key=lambda kv: (0, int(kv[0])) if kv[0].isascii() and kv[0].isdigit() else (1, kv[0]))
    return [v for _, v in keyed]


# A run of percent escapes from its first non-ASCII byte (only those can be bad UTF-8): a
# multi-byte character is always written as one unbroken run.
_ESCAPE_RUN = re.compile(r"%[89A-Fa-f][0-9A-Fa-f](?:%[0-9A-Fa-f]{2})*")


def _check_escapes(text: str) -> None:
    """What decoding the whole form would reject: a NUL, or escapes that are not UTF-8. Run by run,
    in C: a literal character between escapes ends any multi-byte sequence, so checking each run
    of escapes on its own accepts and refuses exactly what decoding the whole text would."""
    if "%00" in text:
        raise FormError("a field contains a NUL character")
    for run in _ESCAPE_RUN.findall(text):
        try:
            bytes.fromhex(run.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormError(f"not UTF-8: {exc}") from None


def _at(tree: dict[str, Any], key: str) -> Any:
    """The node a decoded field path ("account[id]") names in a parsed form, or None."""
    match = _KEY.match(key)
    if not match:
        return None
    node: Any = tree
    for part in [match.group(1), *_PART.findall(match.group(2))]:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# A whole form of plain fields: a name without escapes, brackets, "=", a value.
_PLAIN_FIELD = r"[^\[\]&=%+]+(?:\[[^\[\]&=%+]*\])*=[^&]*"
_PLAIN_FORM = re.compile(rf"{_PLAIN_FIELD}(?:&{_PLAIN_FIELD})*")
# Each field's name, in "&" + the form (a literal first character keeps the scan fast).
_KEY_OF_FIELD = re.compile(r"&([^&=]*)=")


def _scan_fields(text: str, wanted: frozenset[str]) -> tuple[list[str], set[str], dict[str, str]]:
    keys: list[str] = []
    found: dict[str, str] = {}
    roots: set[str] = set()
    for field in text.split("&"):
        raw_key, eq, raw_value = field.partition("=")
        if not eq:
            raise FormError(f"not a form-encoded body: bad query field: {field[:80]!r}")
        key = raw_key.replace("%5B", "[").replace("%5D", "]")
        if "%" in key or "+" in key:
            key = unquote_plus(raw_key)
        match = _KEY.match(key)
        if not match:
            raise FormError(f"malformed field name: {key[:80]!r}")
        if key.count("[") >= MAX_DEPTH:
            raise FormError("field nested too deep")
        roots.add(match.group(1))
        keys.append(key)
        if key in wanted:
            found[key] = unquote_plus(raw_value)
    return keys, roots, found


def scan_bracket_form(body: bytes, wanted: frozenset[str]) -> tuple[set[str], dict[str, str]]:
    """The cheap half of parse_bracket_form, for the webhook request path: rejects everything it
    rejects, but builds no tree. Returns the top-level names and the values of the `wanted` keys
    (written as decoded paths, e.g. "account[id]").

    About a third of the cost of a full parse on a typical amoCRM post: senders percent-encode
    everything, so the body is ASCII and most of the work stays in C.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        # Raw UTF-8 in a form is legal, just unusual: take the thorough path, and read the wanted
        # values from its tree (a check that finds no account fields would wave a foreign one through).
        tree = parse_bracket_form(body)
        return set(tree), {key: value for key in wanted if isinstance(value := _at(tree, key), str)}
    _check_escapes(text)
    if text.count("&") >= MAX_FIELDS:
        raise FormError("too many fields")
    # Keys are plain names and brackets; str.replace is C, unquote is not. (Values are only read
    # for the wanted keys, through unquote_plus, which decodes "[" and "%5B" alike.)
    norm = text.replace("%5B", "[").replace("%5D", "]")
    if _PLAIN_FORM.fullmatch(norm) is None:
        # Something unusual (an escaped or malformed name, a field without "="): field by field,
        # which also says exactly what is wrong.
        keys, roots, found = _scan_fields(text, wanted)
    else:
        # The usual post: one regular expression has checked every name; the rest is str methods.
        fields = "&" + norm
        keys = _KEY_OF_FIELD.findall(fields)
        if max(key.count("[") for key in keys) >= MAX_DEPTH:
            raise FormError("field nested too deep")
        roots = {key.partition("[")[0] for key in keys}
        found = {}
        for key in wanted:
            at = fields.rfind(f"&{key}=")  # the last one wins, as in a full parse
            if at >= 0:
                start = at + len(key) + 2
                end = fields.find("&", start)
                found[key] = unquote_plus(fields[start:] if end < 0 else fields[start:end])
    # A name used both as a value and as a container ("a=1&a[b]=2") has no tree.
    keys.sort()
    for key in keys:
        i = bisect_left(keys, key + "[")
        if i < len(keys) and keys[i].startswith(key + "["):
            raise FormError(f"field {key[:80]!r} clashes with a nested field")
    return roots, found
