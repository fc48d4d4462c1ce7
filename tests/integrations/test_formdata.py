"""PHP-style bracket forms as amoCRM and Bitrix24 post them."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from integrations.formdata import FormError, items, parse_bracket_form


def test_brackets_nest_and_values_stay_strings() -> None:
    body = urlencode([
        ("leads[status][0][id]", "31000001"),
        ("leads[status][0][custom_fields][0][values][0][value]", "yandex"),
        ("leads[status][0][name]", ""),
        ("account[subdomain]", "demoshop"),
    ]).encode()

    assert parse_bracket_form(body) == {
        "leads": {"status": {"0": {
            "id": "31000001",
            "custom_fields": {"0": {"values": {"0": {"value": "yandex"}}}},
            "name": "",
        }}},
        "account": {"subdomain": "demoshop"},
    }


def test_items_orders_by_numeric_index() -> None:
    # Wire order scrambled on purpose; a string sort would put 10 between 1 and 2.
    order = [10, 2, 0, 9, 1, 3, 8, 4, 7, 5, 6]
    form = parse_bracket_form(urlencode([(f"leads[update][{i}][id]", str(i)) for i in order]).encode())

    assert [entry["id"] for entry in items(form["leads"]["update"])] == [str(i) for i in range(11)]


def test_items_skips_scalars_and_non_dicts() -> None:
    assert items({"0": {"id": "a"}, "count": "1"}) == [{"id": "a"}]
    assert items("1") == []
    assert items(None) == []


@pytest.mark.parametrize("body", [
    b"a]b=1",
    b"a=1&a[b]=2",
    b"a[b]=2&a=1",
    b"a" + b"[x]" * 10 + b"=1",
    b"\xff=1",
], ids=["bad-name", "scalar-then-nested", "nested-then-scalar", "too-deep", "non-utf8"])
def test_malformed_forms_raise(body: bytes) -> None:
    with pytest.raises(FormError):
        parse_bracket_form(body)
