"""PHP-style bracket forms as amoCRM and Bitrix24 post them."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from integrations.formdata import FormError, items, parse_bracket_form


def test_brackets_nest_and_values_stay_strings() -> None:
    body = urlencode(
        [
            ("leads[status][0][id]", "31000001"),
            ("leads[status][0][custom_fields][0][values][0][value]", "yandex"),
            ("leads[status][0][name]", ""),
            ("account[subdomain]", "demoshop"),
        ]
    ).encode()

    assert parse_bracket_form(body) == {
        "leads": {
            "status": {
                "0": {
                    "id": "31000001",
                    "custom_fields": {"0": {"values": {"0": {"value": "yandex"}}}},
                    "name": "",
                }
            }
        },
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


@pytest.mark.parametrize(
    "body",
    [
        b"a]b=1",
        b"a=1&a[b]=2",
        b"a[b]=2&a=1",
        b"a" + b"[x]" * 10 + b"=1",
        b"\xff=1",
    ],
    ids=["bad-name", "scalar-then-nested", "nested-then-scalar", "too-deep", "non-utf8"],
)
def test_malformed_forms_raise(body: bytes) -> None:
    with pytest.raises(FormError):
        parse_bracket_form(body)


def test_scan_accepts_and_refuses_exactly_what_the_full_parse_does():
    """The request path uses the cheap scan, the worker the full parse: they must never disagree,
    or a body would be accepted at intake and then fail in the worker (or the reverse)."""
    import random
    from pathlib import Path
    from urllib.parse import quote

    from integrations.formdata import FormError, parse_bracket_form, scan_bracket_form

    rng = random.Random(11)
    bodies = []
    for fixture in sorted((Path(__file__).parent.parent / "fixtures" / "amocrm").glob("*.txt")):
        lines = [ln for ln in fixture.read_text().splitlines() if ln and not ln.startswith("#")]
        bodies.append(
            "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in (ln.split("=", 1) for ln in lines))
        )
    alphabet = [
        "[",
        "]",
        "=",
        "&",
        "%",
        "+",
        "a",
        "0",
        "Z",
        "_",
        "%5B",
        "%5D",
        "%5b",
        "%00",
        "%FF",
        "%D0",
        "%97",
        "&account%5Bid%5D=7",
        "&account[subdomain]=x",
        "[x]" * 10,
        # Raw UTF-8, alone and next to escapes of it (issue 17: the account check skipped such bodies).
        "Ж",
        "ё",
        "Жa%D0%96",
        "%D0%96Ж",
        "€",
        "&account[id]=999",
        "&account[id]=Ж",
        "&account%5Bsubdomain%5D=шоп",
        "&account[id][x]=1",
    ]
    checked = raw_utf8 = 0
    for base in bodies:
        for _ in range(150):
            chars = list(base)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(chars) + 1)
                if rng.random() < 0.3 and chars:
                    del chars[at : at + rng.randint(1, 3)]
                else:
                    chars.insert(at, rng.choice(alphabet))
            body = "".join(chars).encode()
            try:
                tree = parse_bracket_form(body)
                full_ok = True
            except FormError:
                full_ok = False
            try:
                roots, found = scan_bracket_form(body, frozenset({"account[id]", "account[subdomain]"}))
                scan_ok = True
            except FormError:
                scan_ok = False
            assert scan_ok == full_ok, body
            if scan_ok:
                # And it reads the same: the top-level names, and the values it was asked for.
                assert roots == set(tree), body
                account = tree.get("account") if isinstance(tree.get("account"), dict) else {}
                assert found == {
                    f"account[{k}]": v for k, v in account.items() if k in ("id", "subdomain") and isinstance(v, str)
                }, body
            checked += 1
            raw_utf8 += not body.isascii() and scan_ok
    assert checked == 150 * len(bodies)
    assert raw_utf8 > 50  # raw UTF-8 bodies, accepted ones among them, are held to the same answer


@pytest.mark.parametrize(
    "body",
    [
        "account[id]=999&leads[add][0][name]=Ж",
        "leads[add][0][name]=Ж&account%5Bid%5D=999",
        "account[id]=1&leads[add][0][name]=%D0%96Ж&account[id]=999",
        "account[subdomain]=шоп&account[id]=999&leads[add][0][id]=1",
        "account[id]=999&account[subdomain]=%D1%88Ж",
    ],
)
def test_raw_utf8_bodies_give_the_account_fields_a_full_parse_gives(body: str) -> None:
    from integrations.formdata import scan_bracket_form

    wanted = frozenset({"account[id]", "account[subdomain]"})
    tree = parse_bracket_form(body.encode())
    roots, found = scan_bracket_form(body.encode(), wanted)
    assert roots == set(tree)
    assert found == {f"account[{k}]": v for k, v in tree["account"].items() if k in ("id", "subdomain")}
    assert found["account[id]"] == "999"


def test_the_fast_parse_gives_the_tree_and_refusals_of_the_general_parser():
    """parse_bracket_form takes a shortcut for the usual post: on fixtures mangled at random (the
    alphabet above: escapes, brackets, raw UTF-8, NULs) it must agree with urllib's parser."""
    import random
    from pathlib import Path
    from urllib.parse import quote

    from integrations.formdata import _parse_general

    def outcome(parse, body):
        try:
            return parse(body)
        except FormError:
            return FormError

    rng = random.Random(23)
    alphabet = ["[", "]", "=", "&", "%", "+", "a", "0", "%5B", "%5D", "%5b", "%00", "%FF", "%D0", "%97", "%2B"]
    alphabet += ["\x00", "\n", "Ж", "[x]" * 10, "&a=1", "&a[b]=2", "&account[id][]=1", "%%5B", "%5%5D", "[]"]
    fast = total = 0
    for fixture in sorted((Path(__file__).parent.parent / "fixtures" / "amocrm").glob("*.txt")):
        lines = [ln for ln in fixture.read_text().splitlines() if ln and not ln.startswith("#")]
        base = "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in (ln.split("=", 1) for ln in lines))
        assert parse_bracket_form(base.encode()) == _parse_general(base.encode())
        for _ in range(150):
            chars = list(base)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(chars) + 1)
                if rng.random() < 0.3 and chars:
                    del chars[at : at + rng.randint(1, 3)]
                else:
                    chars.insert(at, rng.choice(alphabet))
            body = "".join(chars).encode()
            got = outcome(parse_bracket_form, body)
            assert got == outcome(_parse_general, body), body
            fast += got is not FormError
            total += 1
    assert fast > total // 10  # many mangled bodies still parse: trees are compared, not only refusals


@pytest.mark.parametrize(
    "body",
    [
        # Fields of several records sharing their containers, in wire order and interleaved.
        b"leads[update][0][id]=1&leads[update][1][id]=2&leads[update][0][name]=%D0%97%D0%B0+1"
        b"&leads[update][1][custom_fields][0][values][0][value]=a%2Bb&leads[update][0][price]=5",
        # A container already walked, then a value put over it, or a field under a value.
        b"a[b][c]=1&a[b][d]=2&a[b]=3",
        b"a[b][c]=1&a[b]=3&a[b][d]=2",
        b"a[b]=1&a[c]=2&a[b][c]=3",
        b"a[b][c]=1&a=2",
        b"a[]=1&a[]=2&a[x][]=3&a[x][]=4",
        # Escapes: a run mixing ASCII and multi-byte characters, a lone "%", "+" in a value.
        b"a[b]=%41%D0%96%42&a[c]=100%25&a[d]=x+y%20z&a[e]=50%",
    ],
)
def test_shared_containers_and_escapes_give_the_general_parsers_tree(body: bytes) -> None:
    from integrations.formdata import _parse_general

    def outcome(parse):
        try:
            return parse(body)
        except FormError:
            return FormError

    assert outcome(parse_bracket_form) == outcome(_parse_general)
