"""Phones become E.164 so that a CRM card and a PBX call can be matched."""

from __future__ import annotations

import pytest

from integrations.phones import normalize_all, to_e164


@pytest.mark.parametrize("raw", ["8 912 345-67-01", "+7 (912) 345-67-01", "79123456701"])
def test_russian_formats_are_one_number(raw: str) -> None:
    assert to_e164(raw) == "+79123456701"


@pytest.mark.parametrize("raw", [None, "", "   ", "abc", "123", "+7 999 123", "++"])
def test_garbage_is_none(raw: str | None) -> None:
    assert to_e164(raw) is None


def test_region_decides_numbers_without_country_code() -> None:
    assert to_e164("0301234567", "DE") == "+49301234567"


def test_normalize_all_dedups_in_first_seen_order() -> None:
    # The 999 number repeats last: first-seen order keeps it first.
    raws = ["+7 (999) 123-45-67", "junk", "8 912 345-67-01", "79991234567"]
    assert normalize_all(raws) == ("+79991234567", "+79123456701")


def test_normalize_all_of_nothing_usable_is_empty() -> None:
    assert normalize_all(["", "n/a"]) == ()
