"""A seeded, bounded fuzzer over every webhook route (issue 17): the real fixtures, mutated with
malformed forms, raw and percent-encoded UTF-8, NULs, deep brackets, bodies over the limit,
another account's fields and wrong tokens or signatures. Each delivery is either refused with a
4xx and stores nothing, or accepted and stored for the account whose key it used, naming no other
account; never a 5xx. What was accepted, the worker then parses (the check and the parse agree)."""

from __future__ import annotations

import hashlib
import json
import random
import time
from urllib.parse import quote

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select, update

from app.accounts.models import Account
from app.ingest import inbox as inbox_rows
from app.ingest.models import InboxEvent
from app.settings import Settings
from integrations.bitrix24.emulator import APP_TOKEN
from integrations.formdata import FormError, parse_bracket_form
from integrations.telephony.generic import sign as generic_sign
from tests.conftest import B24_FORM, FIXTURES, FORM, create_account, create_b24_account

SEED = 1717
ROUNDS = 60  # per route
LIMIT = 32 * 1024
AMO_ID, AMO_SUB = "29876543", "demoshop"
MANGO_KEY, MANGO_SALT = "fx-mango-api-key", "fx-mango-api-salt"
GENERIC_SECRET = "fuzz-generic-secret"
SIPUNI_TOKEN = "fuzz-sipuni-token"
ZADARMA_SECRET = "fx-zadarma-secret"
MEGAFON_TOKEN = "fx-megafon-crm-token"
PIECES = ["[", "]", "=", "&", "%", "+", "%FF", "%D0", "%D0%96", "Ж", "é", "€", "%00", "\x00", "%5B", "a"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_webhook_bytes": LIMIT})


def _fixture_form(kind: str, name: str) -> str:
    lines = [ln for ln in (FIXTURES / kind / name).read_text().splitlines() if ln and not ln.startswith("#")]
    return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in (ln.split("=", 1) for ln in lines))


def _mutate(rng: random.Random, body: str) -> bytes:
    ops = [
        lambda b: b + "&leads[add][0][name]=" + "Ж" * rng.randint(1, 5),
        lambda b: b + "&leads%5Badd%5D%5B0%5D%5Bname%5D=%D0%96" + rng.choice(["", "Ж", "%D0"]),
        lambda b: b + "&account[id]=" + rng.choice(["999", "Ж", "", AMO_ID]),
        lambda b: b + "&account%5Bsubdomain%5D=" + rng.choice(["other", "шоп", AMO_SUB, ""]),
        lambda b: b + "&auth[application_token]=" + rng.choice(["0" * 32, APP_TOKEN, "Ж"]),
        lambda b: b + "&auth%5Bmember_id%5D=" + rng.choice(["other-member", "Ж"]),
        lambda b: b + "&auth[application_token_sha256]=" + "0" * 64,
        lambda b: b + "&leads" + "[a]" * rng.randint(5, 14) + "=1",
        lambda b: b[: rng.randrange(len(b) + 1)],
        lambda b: (lambda at: b[:at] + rng.choice(PIECES) + b[at:])(rng.randrange(len(b) + 1)),
        lambda b: b + "&" + "x=1&" * rng.randint(1, 3),
        lambda b: "a=" + "b" * (LIMIT + rng.randint(0, 100)),
        lambda b: b.replace("=", "", 1),
        lambda b: json.dumps({"event": "ONCRMDEALADD", "b": b}),
    ]
    for _ in range(rng.randint(1, 3)):
        body = rng.choice(ops)(body)
    return body.encode("utf-8")


async def _count(rt) -> int:
    async with rt.sessions() as s:
        return await s.scalar(select(func.count()).select_from(InboxEvent))


async def _last(rt) -> InboxEvent:
    async with rt.sessions() as s:
        return await s.scalar(select(InboxEvent).order_by(InboxEvent.id.desc()).limit(1))


def _form_tree(body: bytes) -> dict | None:
    try:
        return parse_bracket_form(body)
    except FormError:
        return None


def _names_ours_only(tree: dict, key: str, ours: str) -> bool:
    node = tree.get(key.split("[")[0])
    value = node.get(key.split("[")[1].rstrip("]")) if isinstance(node, dict) else None
    return value in (None, "", ours) or not isinstance(value, str)


async def test_every_hook_route_refuses_or_stores_for_the_right_account_only(client, app, rt, b24):
    rng = random.Random(SEED)
    amo = await create_account(client)
    other = await create_account(client, name="Другой", base_url="https://othershop.amocrm.ru")
    b24acc = await create_b24_account(client)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(Account).where(Account.id == amo["id"]).values(external_id=AMO_ID))
        await s.execute(update(Account).where(Account.id == other["id"]).values(external_id="11111111"))
        await s.execute(update(Account).where(Account.id == b24acc["id"]).values(external_id=b24.member_id))
    app.state.keys.invalidate()
    pbx = {
        "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
        "megafon": {"crm_token": MEGAFON_TOKEN},
        "zadarma": {"api_secret": ZADARMA_SECRET},
        "sipuni": {"token": SIPUNI_TOKEN},
        "generic": {"secret": GENERIC_SECRET},
    }
    for provider, secrets in pbx.items():
        resp = await client.put(f"/api/accounts/{amo['id']}/telephony/{provider}", json={**secrets, "extensions": {}})
        assert resp.status_code == 200, resp.text

    amo_bodies = [_fixture_form("amocrm", p.name) for p in sorted((FIXTURES / "amocrm").glob("*.txt"))]
    b24_bodies = [_fixture_form("bitrix24", p.name) for p in sorted((FIXTURES / "bitrix24").glob("ON*.txt"))]
    tel = FIXTURES / "telephony"
    mango_bodies = [p.read_text().strip() for p in sorted(tel.glob("mango_*.form"))]
    megafon_body = (tel / "megafon_history.form").read_text().strip()
    zadarma = [p.read_text().partition("\n\n") for p in sorted(tel.glob("zadarma_*.http"))]

    outcomes: dict[str, dict[int, int]] = {}
    problems: list[tuple] = []

    async def deliver(route: str, url: str, body: bytes, headers: dict, oracle, method: str = "POST") -> None:
        before = await _count(rt)
        resp = await client.request(method, url, content=body if method == "POST" else None, headers=headers)
        after = await _count(rt)
        outcomes.setdefault(route, {}).setdefault(resp.status_code, 0)
        outcomes[route][resp.status_code] += 1
        if resp.status_code >= 500 or resp.status_code < 200 or 300 <= resp.status_code < 400:
            problems.append((route, resp.status_code, body[:200], resp.text[:200]))
        elif resp.status_code >= 400:
            if after != before:
                problems.append((route, "stored a refused delivery", body[:200]))
        else:
            if after not in (before, before + 1):
                problems.append((route, "stored more than one row", body[:200]))
            elif after == before + 1:
                row = await _last(rt)
                if not oracle(body, row):
                    problems.append((route, "accepted for the wrong account", body[:200], row.account_id))

    def amo_ok(body: bytes, row: InboxEvent) -> bool:
        tree = _form_tree(body)
        return (
            row.account_id == amo["id"]
            and tree is not None
            and _names_ours_only(tree, "account[id]", AMO_ID)
            and _names_ours_only(tree, "account[subdomain]", AMO_SUB)
        )

    def b24_ok(body: bytes, row: InboxEvent) -> bool:
        tree = _form_tree(body)
        auth = (tree or {}).get("auth") or {}
        return (
            row.account_id == b24acc["id"]
            and isinstance(auth, dict)
            and auth.get("application_token") == APP_TOKEN
            and auth.get("member_id") == b24.member_id
        )

    def pbx_ok(body: bytes, row: InboxEvent) -> bool:
        return row.account_id == amo["id"]

    for _ in range(ROUNDS):
        await deliver("amocrm", f"/hooks/amocrm/{amo['key']}", _mutate(rng, rng.choice(amo_bodies)), FORM, amo_ok)
        # Our account's delivery at the other account's key: that one's own id does not match.
        body = _fixture_form("amocrm", "lead_add.txt").encode()
        await deliver("amocrm-other-key", f"/hooks/amocrm/{other['key']}", body, FORM, lambda b, r: False)
        await deliver(
            "bitrix24", f"/hooks/bitrix24/{b24acc['key']}", _mutate(rng, rng.choice(b24_bodies)), B24_FORM, b24_ok
        )
        # Mango: a mutated form keeps its signature only if the json and key survived intact.
        raw = rng.choice(mango_bodies)
        signed = raw if rng.random() < 0.3 else _mutate(rng, raw).decode("utf-8", "replace")
        event = rng.choice(["summary", "call", "recording", "x%00y", "Ж"])
        await deliver("mango", f"/hooks/telephony/mango/{amo['key']}/events/{event}", signed.encode(), FORM, pbx_ok)
        await deliver("megafon", f"/hooks/telephony/megafon/{amo['key']}", _mutate(rng, megafon_body), FORM, pbx_ok)
        head, _, zbody = rng.choice(zadarma)
        zheaders = dict(line.split(": ", 1) for line in head.splitlines())
        if rng.random() < 0.5:
            zheaders["Signature"] = rng.choice(["", "AAAA", zheaders["Signature"] + "x"])
        await deliver(
            "zadarma", f"/hooks/telephony/zadarma/{amo['key']}", _mutate(rng, zbody.strip()), zheaders, pbx_ok
        )
        fields = f"event={rng.choice('12345')}&call_id=c{rng.randrange(5)}&src_type=1&src_num=7999"
        token = rng.choice([SIPUNI_TOKEN, SIPUNI_TOKEN, "wrong", "", SIPUNI_TOKEN + "%00"])
        await deliver(
            "sipuni", f"/hooks/telephony/sipuni/{amo['key']}?token={token}", _mutate(rng, fields), FORM, pbx_ok
        )
        call = json.dumps({"call_id": f"g{rng.randrange(1000)}", "talk_seconds": rng.choice([0, 5, -1, "x"])})
        gbody = call.encode() if rng.random() < 0.5 else _mutate(rng, call)
        stamp = str(int(time.time()) + rng.choice([0, 0, 10_000]))
        msg_id = f"m{rng.randrange(10**6)}"
        sig = generic_sign(rng.choice([GENERIC_SECRET, GENERIC_SECRET, "other"]), msg_id, stamp, gbody)
        await deliver(
            "generic",
            f"/hooks/telephony/generic/{amo['key']}",
            gbody,
            {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": sig, "content-type": "x"},
            pbx_ok,
        )
    assert problems == [], problems[:10]

    # Every hook route was fuzzed, and each both refused and (but the other-key case) accepted.
    hooks = {
        r.path.split("/")[3] if "/telephony/" in r.path else r.path.split("/")[2]
        for r in iter_route_contexts(app.routes)
        if (r.path or "").startswith("/hooks/")
    }
    assert hooks <= {route.split("-")[0] for route in outcomes}, (hooks, outcomes)
    for route, codes in outcomes.items():
        assert any(400 <= c < 500 for c in codes), (route, codes)
        if route != "amocrm-other-key":
            assert 200 in codes, (route, codes)
    assert 413 in outcomes["amocrm"] and 401 in outcomes["generic"]

    # What the intake accepted, the worker's parse accepts too.
    async with rt.sessions() as s:
        rows = list(await s.scalars(select(InboxEvent)))
    for row in rows:
        inbox_rows.parse(rt, row, "RU")  # raises on a row the check should have refused
    assert len(rows) > 20
    assert all(hashlib.sha256(APP_TOKEN.encode()).hexdigest() in r.payload for r in rows if r.source == "bitrix24")
    assert not any(MANGO_KEY in r.payload or MEGAFON_TOKEN in r.payload for r in rows)
