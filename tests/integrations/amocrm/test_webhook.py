"""amoCRM webhook bodies (form-encoded, PHP bracket keys) → domain events, and rejection of garbage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from integrations.amocrm.webhook import check, parse
from integrations.base import (
    CallDirection,
    CallEvent,
    CompanyDeleted,
    ContactDeleted,
    ContactUpserted,
    DealDeleted,
    DealUpserted,
    DomainEvent,
    NoteAdded,
    NoteKind,
    ParsedWebhook,
    StageKind,
    TaskDeleted,
    TaskUpserted,
    UnknownEntity,
    WebhookMalformed,
)

# Copies of ../shared/fixtures/amocrm (relative to the repository root), kept inside the
# repository so the suite does not depend on a directory outside it.
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "amocrm"
RECEIVED_AT = datetime(2025, 11, 25, 12, 0, 0, tzinfo=UTC)
ACCOUNT = [("account[subdomain]", "demoshop"), ("account[id]", "29876543")]


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def fixture_pairs(name: str) -> list[tuple[str, str]]:
    pairs = []
    for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        pairs.append((key, value))
    return pairs


def body_of(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode("ascii")


def parse_pairs(pairs: list[tuple[str, str]]) -> list[DomainEvent]:
    return parse(body_of(pairs), region="RU", received_at=RECEIVED_AT)


def parse_fixture(name: str) -> list[DomainEvent]:
    return parse_pairs(fixture_pairs(name))


def one(events: list[DomainEvent], kind: type) -> DomainEvent:
    assert len(events) == 1, events
    assert isinstance(events[0], kind), events[0]
    return events[0]


# -- every fixture -------------------------------------------------------------------------------

FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.txt"))


# The copies of ../shared/fixtures/amocrm (our own additions may sit beside them).
SHARED_COPIES = {
    "contact_update.txt", "lead_add.txt", "lead_delete.txt", "lead_note_call_out.txt",
    "lead_note_common.txt", "lead_responsible.txt", "lead_status.txt", "lead_update.txt",
    "task_add.txt", "task_complete.txt", "task_delete.txt", "task_update_deadline.txt",
    "two_leads_one_post.txt",
}  # fmt: skip


def test_fixture_copies_are_present() -> None:
    assert SHARED_COPIES <= set(FIXTURE_FILES)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_every_fixture_parses_into_known_events(name: str) -> None:
    events = parse_fixture(name)
    assert events
    assert not any(isinstance(ev, UnknownEntity) for ev in events), events
    assert check(body_of(fixture_pairs(name))) == ParsedWebhook(external_account_id="29876543", subdomain="demoshop")


def test_lead_add() -> None:
    deal = one(parse_fixture("lead_add.txt"), DealUpserted)
    assert deal.id == "31000001"
    assert deal.name == "Заявка с сайта"
    assert (deal.pipeline_id, deal.stage_id, deal.stage_kind) == ("4100000", "41000002", StageKind.OPEN)
    assert deal.price == 15000.0
    assert deal.responsible_user_id == "8100001"
    assert deal.updated_at == at(1764000000)
    assert deal.stage_changed_at is None
    assert deal.is_thin is False


def test_lead_update() -> None:
    deal = one(parse_fixture("lead_update.txt"), DealUpserted)
    assert deal.id == "31000001"
    assert deal.price == 48000.0
    assert deal.created_at == at(1763913600)
    assert deal.stage_changed_at is None
    assert deal.is_thin is False


def test_lead_status_sets_stage_changed_at() -> None:
    deal = one(parse_fixture("lead_status.txt"), DealUpserted)
    assert deal.id == "31000001"
    assert (deal.pipeline_id, deal.stage_id) == ("4100000", "41000003")
    assert deal.stage_changed_at == at(1764000000)
    assert deal.updated_at == at(1764000000)
    assert deal.is_thin is False


def test_lead_responsible() -> None:
    deal = one(parse_fixture("lead_responsible.txt"), DealUpserted)
    assert deal.id == "31000001"
    assert deal.responsible_user_id == "8100002"
    assert deal.stage_changed_at is None
    assert deal.is_thin is False


def test_lead_delete() -> None:
    assert parse_fixture("lead_delete.txt") == [DealDeleted(id="31000001")]


def test_lead_note_common() -> None:
    note = one(parse_fixture("lead_note_common.txt"), NoteAdded)
    assert note.id == "61000001"
    assert note.kind is NoteKind.COMMON
    assert (note.entity_type, note.entity_id, note.deal_id) == ("deal", "31000001", "31000001")
    assert note.text == "Обсудили сроки поставки, ждёт КП"
    assert note.created_by == "8100001"
    assert note.created_at == at(1764000000)


def test_lead_note_call_out_keeps_call_params() -> None:
    note, call = parse_fixture("lead_note_call_out.txt")
    assert isinstance(note, NoteAdded)
    # A call note is also a call, for the telephony rules (app/calls).
    assert isinstance(call, CallEvent) and call.provider == "amocrm" and call.call_id == "call-7788"
    assert (call.direction, call.client_number, call.talk_seconds, call.deal_id) == (
        CallDirection.OUT,
        "+79991234567",
        95,
        "31000001",
    )
    assert note.id == "61000002"
    assert note.kind is NoteKind.CALL_OUT
    assert note.deal_id == "31000001"
    assert note.text is None
    assert dict(note.params) == {"uniq": "call-7788", "duration": "95", "phone": "+79991234567", "src": "mango_office"}


def test_task_add() -> None:
    task = one(parse_fixture("task_add.txt"), TaskUpserted)
    assert task.id == "52000001"
    assert (task.entity_type, task.entity_id, task.deal_id) == ("deal", "31000001", "31000001")
    assert task.due_at == at(1764086400)
    assert task.is_completed is False
    assert task.result_text is None
    assert task.text == "Перезвонить, уточнить бюджет"
    assert task.responsible_user_id == "8100001"
    assert task.created_at == at(1763996400)


def test_task_complete_has_result() -> None:
    task = one(parse_fixture("task_complete.txt"), TaskUpserted)
    assert task.id == "52000001"
    assert task.is_completed is True
    assert task.result_text == "Клиент согласен на встречу"


def test_task_update_deadline_moves_due_at() -> None:
    added = one(parse_fixture("task_add.txt"), TaskUpserted)
    moved = one(parse_fixture("task_update_deadline.txt"), TaskUpserted)
    assert moved.id == added.id
    assert moved.due_at == at(1764259200)
    assert moved.due_at > added.due_at
    assert moved.is_completed is False


def test_task_delete() -> None:
    assert parse_fixture("task_delete.txt") == [TaskDeleted(id="52000001")]


def test_contact_update_normalizes_phone() -> None:
    contact = one(parse_fixture("contact_update.txt"), ContactUpserted)
    assert contact.id == "33000001"
    assert contact.name == "Анна Кузнецова"
    assert contact.responsible_user_id == "8100001"
    assert contact.phones == ("+79991234567",)
    assert contact.updated_at == at(1764000000)


def test_two_leads_in_one_post_keep_their_order() -> None:
    events = parse_fixture("two_leads_one_post.txt")
    assert [type(ev) for ev in events] == [DealUpserted, DealUpserted]
    assert [(ev.id, ev.responsible_user_id) for ev in events] == [("31000001", "8100001"), ("31000002", "8100002")]


# -- shapes the fixtures do not show -------------------------------------------------------------


def test_thin_status_webhook_is_marked_thin_and_dated_on_receipt() -> None:
    pairs = [
        ("leads[status][0][id]", "31000001"),
        ("leads[status][0][status_id]", "142"),
        ("leads[status][0][pipeline_id]", "4100000"),
        ("leads[status][0][old_status_id]", "41000003"),
        ("leads[status][0][old_pipeline_id]", "4100000"),
        *ACCOUNT,
    ]

    deal = one(parse_pairs(pairs), DealUpserted)

    assert deal.is_thin is True
    assert deal.id == "31000001"
    assert (deal.stage_id, deal.stage_kind) == ("142", StageKind.WON)
    assert deal.updated_at == RECEIVED_AT
    assert deal.stage_changed_at == RECEIVED_AT
    # A thin post says nothing about these; None keeps the mirror's values.
    assert (deal.name, deal.responsible_user_id, deal.price) == (None, None, None)


def test_unknown_root_is_unknown_entity() -> None:
    events = parse_pairs([("companies[add][0][id]", "5"), *ACCOUNT])
    assert events == [UnknownEntity(kind="companies")]


def test_unknown_fields_inside_an_entity_are_ignored() -> None:
    pairs = fixture_pairs("lead_status.txt")
    extra = [
        ("leads[status][0][is_price_modified_by_robot]", "0"),
        ("leads[status][0][loss_reason][0][name]", "Дорого"),
        ("leads[status][0][tags][0][name]", "vip"),
    ]
    assert parse_pairs(pairs[:3] + extra + pairs[3:]) == parse_pairs(pairs)


def test_subdomain_only_account_is_accepted() -> None:
    pairs = [p for p in fixture_pairs("lead_update.txt") if p[0] != "account[id]"]
    parsed = check(body_of(pairs))
    assert parsed == ParsedWebhook(external_account_id=None, subdomain="demoshop")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"%%%&&&==",
        b"leads[add][0][name]=\xff\xfe&account[id]=1",
        b"leads[add][0][name]=%FF%FE&account[id]=1",
        b"foo=bar",
        b"leads=1&leads[add][0][id]=2",
        b"leads[add][0][id]=2&leads=1",
    ],
    ids=[
        "empty",
        "percent-garbage",
        "raw-non-utf8",
        "encoded-non-utf8",
        "no-amocrm-root",
        "scalar-then-nested",
        "nested-then-scalar",
    ],
)
def test_check_rejects_malformed(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        check(body)
    with pytest.raises(WebhookMalformed):
        parse(body, region="RU", received_at=RECEIVED_AT)


def test_contacts_delete_of_a_company_is_a_company_deletion() -> None:
    # amoCRM posts a company's deletion under contacts[delete] with type=company: it must not
    # tombstone a contact, and the company's tombstone keeps its name for past revenue.
    events = parse_pairs(
        [
            ("contacts[delete][0][id]", "41000001"),
            ("contacts[delete][0][type]", "company"),
            ("contacts[delete][1][id]", "41000002"),
            ("contacts[delete][1][type]", "contact"),
            ("account[subdomain]", "demoshop"),
        ]
    )
    assert events == [CompanyDeleted(id="41000001"), ContactDeleted(id="41000002")]
