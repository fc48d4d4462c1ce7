"""empty_comment on hand-built mirror states: notes' text_norm is fold(text), as the mirror stores it."""

from __future__ import annotations

from datetime import timedelta

from app.mirror.models import Note
from app.mirror.text import fold
from tests.app.rules.mirror_builder import (
    MANAGER,
    OTHER_MANAGER,
    Event,
    add_deal,
    add_note,
    change,
    evaluate,
    finding,
    findings,
    history,
    msk,
    new_account,
    save_rules,
)

RULE = "empty_comment"
DEAL_CREATED = msk(2025, 12, 1, 10, 0)
WRITTEN = msk(2025, 12, 8, 12, 0)
NOW = msk(2025, 12, 8, 16, 0)
MEANINGFUL = "Клиент согласовал смету, оплата до пятницы"  # 42 characters


async def _deal(rt) -> int:
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=DEAL_CREATED)
    return aid


async def _flagged(rt, aid) -> list[str]:
    return sorted(f.entity_id for f in await findings(rt, aid, RULE) if f.status == "open")


EMPTY_NOTES = {
    "OK": "ок",
    "OK_SHOUTED": "Ок!!",
    "STOCK": "Перезвонить.",
    "STOCK_PADDED": "  перезвонить  ",
    "TEN_CHARS": "Думает ещё",
    "EMPTY": "",
    "NULL": None,
}


async def test_empty_or_stock_notes_are_findings(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        for note_id, text in EMPTY_NOTES.items():
            add_deal(s, aid, f"D_{note_id}", created_at=DEAL_CREATED)
            note = add_note(s, aid, note_id, f"D_{note_id}", text, created_at=WRITTEN, created_by=OTHER_MANAGER)
            assert note.text_norm == fold(text)
    assert len(fold(EMPTY_NOTES["TEN_CHARS"]) or "") == 10

    await evaluate(rt, aid, NOW)

    rows = await findings(rt, aid, RULE)
    assert sorted(f.entity_id for f in rows) == sorted(EMPTY_NOTES)
    for f in rows:
        assert (f.status, f.entity_type, f.deal_id, f.manager_id, f.started_at) == (
            "open",
            "note",
            f"D_{f.entity_id}",
            OTHER_MANAGER,
            WRITTEN,
        )
        assert await history(rt, f.id) == [Event(None, "open", "sweep", "condition began")]


async def test_a_meaningful_note_is_not_a_finding(rt):
    assert len(MEANINGFUL) >= 40
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", MEANINGFUL, created_at=WRITTEN)

    await evaluate(rt, aid, NOW)

    assert await findings(rt, aid, RULE) == []


async def test_min_chars_is_a_strict_lower_bound(rt):
    twenty, nineteen = "Отправил КП на почту", "Отправил КП на почт"
    assert (len(fold(twenty)), len(fold(nineteen))) == (20, 19)
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N20", "D1", twenty, created_at=WRITTEN)
        add_deal(s, aid, "D2", created_at=DEAL_CREATED)
        add_note(s, aid, "N19", "D2", nineteen, created_at=WRITTEN)

    await evaluate(rt, aid, NOW)

    assert await _flagged(rt, aid) == ["N19"]


async def test_only_common_notes_are_judged(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "CALL", "D1", "ок", created_at=WRITTEN, kind="call_in")
        add_note(s, aid, "SYS", "D1", "+", created_at=WRITTEN, kind="system")

    await evaluate(rt, aid, NOW)

    assert await findings(rt, aid, RULE) == []


async def test_a_proper_note_written_later_answers_the_empty_one(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "EARLIER", "D1", MEANINGFUL, created_at=WRITTEN - timedelta(hours=1))
        add_note(s, aid, "N1", "D1", "ок", created_at=WRITTEN)
        add_note(s, aid, "N2", "D1", "Перезвонить", created_at=WRITTEN + timedelta(minutes=10))
    await evaluate(rt, aid, NOW)
    # A proper note before does not answer; a later empty note does not answer either.
    assert await _flagged(rt, aid) == ["N1", "N2"]

    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N3", "D1", "Созвонились: берут 12 позиций, счёт выставлен", created_at=NOW)
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    for note_id in ("N1", "N2"):
        f = await finding(rt, aid, RULE, note_id)
        assert f is not None and f.status == "resolved"
        assert (await history(rt, f.id))[-1] == Event("open", "resolved", "sweep", "condition cleared")
    assert await finding(rt, aid, RULE, "N3") is None


async def test_a_proper_note_on_another_deal_does_not_answer(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D2", created_at=DEAL_CREATED)
        add_note(s, aid, "N1", "D1", "ок", created_at=WRITTEN)
        add_note(s, aid, "N2", "D2", MEANINGFUL, created_at=WRITTEN + timedelta(minutes=10))

    await evaluate(rt, aid, NOW)

    assert await _flagged(rt, aid) == ["N1"]


async def test_notes_older_than_the_lookback_are_ignored(rt):
    aid = await _deal(rt)
    week = timedelta(days=7)  # the default lookback_days
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "OLD", "D1", "ок", created_at=NOW - week - timedelta(minutes=1))
        add_note(s, aid, "RECENT", "D1", "ок", created_at=NOW - week + timedelta(minutes=1))

    await evaluate(rt, aid, NOW)

    assert await _flagged(rt, aid) == ["RECENT"]


async def test_lookback_days_from_the_rules_document(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", "ок", created_at=NOW - timedelta(days=2))
    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"lookback_days": 1}}}})

    await evaluate(rt, aid, NOW)

    assert await findings(rt, aid, RULE) == []


async def test_custom_stock_phrases(rt):
    phrase = "Клиент думает над предложением"  # long enough to pass min_chars on its own
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", phrase + ".", created_at=WRITTEN)
        add_deal(s, aid, "D2", created_at=DEAL_CREATED)
        add_note(s, aid, "N2", "D2", "Перезвонить клиенту после обеда, уточнить объём", created_at=WRITTEN)

    await evaluate(rt, aid, NOW)
    assert await findings(rt, aid, RULE) == []

    await save_rules(rt, aid, {"rules": {RULE: {"settings": {"stock_phrases": ["  КЛИЕНТ думает над предложением!"]}}}})
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    assert await _flagged(rt, aid) == ["N1"]


async def test_note_without_author_falls_back_to_the_deal_manager(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", "ок", created_at=WRITTEN, created_by=None)

    await evaluate(rt, aid, NOW)

    f = await finding(rt, aid, RULE, "N1")
    assert f is not None and f.manager_id == MANAGER


async def test_editing_a_note_into_a_proper_one_resolves_it(rt):
    aid = await _deal(rt)
    async with rt.sessions() as s, s.begin():
        add_note(s, aid, "N1", "D1", "ок", created_at=WRITTEN)
    await evaluate(rt, aid, NOW)
    assert await _flagged(rt, aid) == ["N1"]

    await change(rt, Note, aid, "N1", text=MEANINGFUL, text_norm=fold(MEANINGFUL))
    await evaluate(rt, aid, NOW + timedelta(minutes=5))

    f = await finding(rt, aid, RULE, "N1")
    assert f is not None and f.status == "resolved"


async def test_min_chars_follows_a_stage_override(rt):
    aid = await new_account(rt)
    async with rt.sessions() as s, s.begin():
        add_deal(s, aid, "D1", created_at=DEAL_CREATED, pipeline_id="P1", stage_id="S1")
        add_deal(s, aid, "D2", created_at=DEAL_CREATED, pipeline_id="P1", stage_id="S2")
        add_note(s, aid, "N1", "D1", "Выставили счёт", created_at=WRITTEN)  # 14 characters
        add_note(s, aid, "N2", "D2", "Выставили счёт", created_at=WRITTEN)
    # Short notes are fine in S1 (a 10-character minimum there), not elsewhere.
    await save_rules(rt, aid, {"rules": {RULE: {"stages": {"P1/S1": {"min_chars": 10}}}}})
    await evaluate(rt, aid, NOW)
    assert await _flagged(rt, aid) == ["N2"]
