"""Bitrix24 telephony at the wire: ONVOXIMPLANTCALLEND as the call model, the call's deal read
from its activity's bindings through `batch`, search by phone, and outside calls logged with
telephony.externalcall.register + finish (app mode only, never twice)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
import respx

from integrations.base import (
    CallDirection,
    CallEvent,
    CallStatus,
    ContactUpserted,
    CrmAmbiguous,
    CrmRequestError,
    CrmUnavailable,
    DealUpserted,
    NewCall,
    RecordNamed,
    UnknownEntity,
)
from integrations.bitrix24 import webhook
from integrations.bitrix24.crm import ExternalCallsNeedApp
from tests.conftest import b24_form
from tests.integrations.bitrix24.test_b24_client import HOOK, PORTAL, Tokens, body_of, client

RECEIVED = datetime(2025, 11, 24, 16, 8, tzinfo=UTC)


def parse(body: str) -> list:
    return webhook.parse(body.encode(), region="RU", received_at=RECEIVED)


def call_end(**data: str) -> list:
    return parse(b24_form("ONVOXIMPLANTCALLEND", **{f"data[{k}]": v for k, v in data.items()}))


def test_the_fixture_becomes_a_finished_call_and_a_reference_to_its_activity():
    call, ref = parse(b24_form("ONVOXIMPLANTCALLEND"))
    assert call == CallEvent(
        provider="bitrix24",
        call_id="externalCall.7c1e0f2a.1764000400",
        direction=CallDirection.OUT,
        client_number="+79991234567",
        line_number=None,
        manager_id="7",
        started_at=datetime(2025, 11, 24, 16, 6, 40, tzinfo=UTC),
        ended_at=datetime(2025, 11, 24, 16, 8, 15, tzinfo=UTC),
        talk_seconds=95,
        duration_seconds=95,
        status=CallStatus.ANSWERED,
        is_final=True,
    )
    assert ref == RecordNamed("call", "10240:externalCall.7c1e0f2a.1764000400")


@pytest.mark.parametrize(
    ("call_type", "direction"),
    [("1", CallDirection.OUT), ("2", CallDirection.IN), ("3", CallDirection.IN), ("4", CallDirection.OUT)],
)
def test_call_types(call_type, direction):
    assert call_end(CALL_TYPE=call_type)[0].direction is direction


@pytest.mark.parametrize(
    ("code", "duration", "status", "talk"),
    [
        ("200", "95", CallStatus.ANSWERED, 95),
        ("200", "0", CallStatus.MISSED, 0),
        ("304", "0", CallStatus.MISSED, 0),
        ("486", "0", CallStatus.BUSY, 0),
        ("603", "0", CallStatus.FAILED, 0),
        ("603-S", "0", CallStatus.FAILED, 0),
        ("480", "0", CallStatus.FAILED, 0),
        ("OTHER", "3", CallStatus.FAILED, 0),
    ],
)
def test_failed_codes(code, duration, status, talk):
    call = call_end(CALL_FAILED_CODE=code, CALL_DURATION=duration)[0]
    assert (call.status, call.talk_seconds, call.duration_seconds) == (status, talk, int(duration))


def test_numbers_use_the_account_region_and_an_info_call_is_no_sales_call():
    assert call_end(PHONE_NUMBER="8 (912) 345-67-89")[0].client_number == "+79123456789"
    assert call_end(PORTAL_NUMBER="+7 495 765-43-21")[0].line_number == "+74957654321"
    assert call_end(CALL_TYPE="5") == [UnknownEntity("onvoximplantcallend")]
    assert call_end(CALL_ID="") == [UnknownEntity("onvoximplantcallend")]
    # Without an activity id the reference still names the call; the client finds the activity.
    assert call_end(CRM_ACTIVITY_ID="")[1] == RecordNamed("call", ":externalCall.7c1e0f2a.1764000400")


def cmd_params(sent: dict, key: str) -> tuple[str, dict]:
    method, _, query = sent["cmd"][key].partition("?")
    return method, dict(parse_qsl(query))


@respx.mock
async def test_the_call_deal_comes_from_its_activity_bindings_in_one_batch():
    route = respx.post(f"{HOOK}/batch.json").respond(
        json={
            "result": {
                "result": {
                    "s0": [
                        {
                            "ID": "7",
                            "CALL_ID": "externalCall.7c1e0f2a.1764000400",
                            "CALL_RECORD_URL": "https://rec.example/7.mp3",
                            "CRM_ENTITY_TYPE": "CONTACT",
                            "CRM_ENTITY_ID": "311",
                            "CRM_ACTIVITY_ID": "10240",
                        }
                    ],
                    "b0": [{"entityTypeId": 3, "entityId": 311}, {"entityTypeId": 2, "entityId": 4521}],
                    "s1": [],
                    "b1": [{"entityTypeId": 3, "entityId": 312}],
                },
                "result_error": [],
                "result_total": {"s0": 1, "s1": 0},
                "result_next": [],
                "result_time": [],
            }
        }
    )
    events = await client().fetch_named(
        [RecordNamed("call", "10240:externalCall.7c1e0f2a.1764000400"), RecordNamed("call", ":externalCall.b.1")],
        region="RU",
    )
    sent = body_of(route.calls[0])
    assert cmd_params(sent, "s0") == (
        "voximplant.statistic.get",
        {"FILTER[CALL_ID]": "externalCall.7c1e0f2a.1764000400"},
    )
    assert cmd_params(sent, "b0") == ("crm.activity.binding.list", {"activityId": "10240"})
    # No activity id in the event: taken from the call's statistics row inside the same batch.
    assert cmd_params(sent, "b1") == ("crm.activity.binding.list", {"activityId": "$result[s1][0][CRM_ACTIVITY_ID]"})
    # The contact-only call adds nothing: the number matching decides its card.
    assert events == [
        CallEvent(
            provider="bitrix24",
            call_id="externalCall.7c1e0f2a.1764000400",
            deal_id="4521",
            recording_url="https://rec.example/7.mp3",
        )
    ]


@respx.mock
async def test_a_binding_the_portal_will_not_give_leaves_the_call_to_the_number_matching():
    respx.post(f"{HOOK}/batch.json").respond(
        json={
            "result": {
                "result": {"s1": [{"CALL_RECORD_URL": ""}]},
                "result_error": {
                    "s0": {
                        "error": "insufficient_scope",
                        "error_description": "The request requires higher privileges",
                    },
                    "b0": {"error": "100", "error_description": "Required fields are missing"},
                    "b1": {"error": "ACCESS_DENIED", "error_description": "Access denied"},
                },
            }
        }
    )
    refs = [RecordNamed("call", ":externalCall.x.1"), RecordNamed("call", "5:externalCall.y.2")]
    assert await client().fetch_named(refs, region="RU") == []


@respx.mock
async def test_a_portal_over_its_limit_keeps_the_call_event_waiting():
    respx.post(f"{HOOK}/batch.json").respond(
        503, json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    )
    with pytest.raises(CrmUnavailable):
        await client(max_retries=1).fetch_named([RecordNamed("call", "5:externalCall.y.2")], region="RU")


CONTACT_311 = {
    "ID": "311",
    "NAME": "Иван",
    "LAST_NAME": "Клиентов",
    "ASSIGNED_BY_ID": "7",
    "DATE_MODIFY": "2025-11-20T10:00:00+03:00",
    "PHONE": [{"ID": "5", "VALUE_TYPE": "WORK", "VALUE": "8 (912) 345-67-89", "TYPE_ID": "PHONE"}],
}
CONTACT_312 = {**CONTACT_311, "ID": "312", "PHONE": [{"ID": "6", "VALUE": "+7 912 345-67-890", "TYPE_ID": "PHONE"}]}


def deal_item(id: int, contact: int | None, company: int | None = None) -> dict:
    return {
        "id": id,
        "title": f"Сделка {id}",
        "categoryId": 0,
        "stageId": "NEW",
        "stageSemanticId": "P",
        "closed": "N",
        "assignedById": 7,
        "opportunity": 1000,
        "contactId": contact,
        "contactIds": [contact] if contact else [],
        "companyId": company,
        "createdTime": "2025-11-20T10:00:00+03:00",
        "updatedTime": "2025-11-21T10:00:00+03:00",
        "movedTime": "2025-11-20T10:00:00+03:00",
    }


@respx.mock
async def test_search_phone_finds_the_contacts_open_deals_and_the_companys():
    route = respx.post(f"{HOOK}/batch.json")
    route.side_effect = [
        respx.MockResponse(
            json={
                "result": {
                    "result": {"contacts": {"CONTACT": [311, 312]}, "companies": {"COMPANY": [77]}},
                    "result_error": [],
                }
            }
        ),
        respx.MockResponse(
            json={
                "result": {
                    "result": {
                        "contact_311": CONTACT_311,
                        "contact_312": CONTACT_312,
                        "deals_contactId": {"items": [deal_item(4521, 311), deal_item(4530, 312)]},
                        "deals_companyId": {"items": [deal_item(4540, None, 77)]},
                    },
                    "result_error": [],
                }
            }
        ),
    ]
    found = await client().search_phone("+79123456789", region="RU")
    first, second = body_of(route.calls[0]), body_of(route.calls[1])
    method, params = cmd_params(first, "contacts")
    assert method == "crm.duplicate.findbycomm" and params["entity_type"] == "CONTACT" and params["type"] == "PHONE"
    assert [v for k, v in sorted(params.items()) if k.startswith("values")] == [
        "+79123456789",
        "79123456789",
        "89123456789",
    ]
    assert cmd_params(first, "companies")[1]["entity_type"] == "COMPANY"
    method, params = cmd_params(second, "deals_contactId")
    assert method == "crm.item.list" and params["entityTypeId"] == "2" and params["filter[closed]"] == "N"
    assert (params["filter[@contactId][0]"], params["filter[@contactId][1]"]) == ("311", "312")
    assert cmd_params(second, "deals_companyId")[1]["filter[@companyId][0]"] == "77"
    # 312's phone only shares a run of digits: neither it nor its deal is a match.
    assert found.contact_ids == ("311",) and found.deal_ids == ("4521", "4540")
    assert [e.id for e in found.events if isinstance(e, ContactUpserted)] == ["311"]
    assert {e.id for e in found.events if isinstance(e, DealUpserted)} == {"4521", "4540"}


@respx.mock
async def test_search_phone_with_nothing_found_asks_once():
    route = respx.post(f"{HOOK}/batch.json").respond(
        json={"result": {"result": {"contacts": [], "companies": []}, "result_error": []}}
    )
    found = await client().search_phone("+79123456789", region="RU")
    assert found.events == () and found.deal_ids == () and route.call_count == 1


APP = f"{PORTAL}/rest"
CALL = NewCall(
    request_id="41",
    direction=CallDirection.IN,
    phone="+79123456789",
    status=CallStatus.ANSWERED,
    talk_seconds=95,
    started_at=datetime(2025, 11, 24, 16, 6, 40, tzinfo=UTC),
    uniq="crmwatch:mango:E1",
    responsible_user_id="7",
    recording_url="https://rec.example/1.mp3",
    contact_id="311",
)
FINISHED = {
    "ID": 9001,
    "CALL_ID": "externalCall.abc.1764000400",
    "EXTERNAL_CALL_ID": "crmwatch:mango:E1",
    "CRM_ACTIVITY_ID": 7943,
    "CRM_ENTITY_TYPE": "CONTACT",
    "CRM_ENTITY_ID": 311,
}


@respx.mock
async def test_log_calls_reads_back_then_registers_and_finishes_in_one_batch():
    route = respx.post(f"{APP}/batch.json")
    route.side_effect = [
        respx.MockResponse(json={"result": {"result": {"x0": []}, "result_error": [], "result_total": {"x0": 0}}}),
        respx.MockResponse(
            json={
                "result": {
                    "result": {
                        "r0": {
                            "CALL_ID": "externalCall.abc.1764000400",
                            "CRM_CREATED_LEAD": None,
                            "CRM_CREATED_ENTITIES": [],
                            "CRM_ENTITY_TYPE": "CONTACT",
                            "CRM_ENTITY_ID": 311,
                        },
                        "f0": FINISHED,
                    },
                    "result_error": [],
                }
            }
        ),
    ]
    created = await client(Tokens("oauth-token-1")).log_calls([CALL])
    assert created == {"41": "9001"}
    check, write = body_of(route.calls[0]), body_of(route.calls[1])
    assert check["auth"] == "oauth-token-1"
    assert cmd_params(check, "x0") == ("voximplant.statistic.get", {"FILTER[EXTERNAL_CALL_ID]": "crmwatch:mango:E1"})
    method, register = cmd_params(write, "r0")
    assert method == "telephony.externalcall.register"
    assert register == {
        "USER_ID": "7",
        "PHONE_NUMBER": "+79123456789",
        "TYPE": "2",
        "CALL_START_DATE": "2025-11-24T16:06:40+00:00",
        "CRM_CREATE": "0",
        "SHOW": "0",
        "ADD_TO_CHAT": "0",
        "EXTERNAL_CALL_ID": "crmwatch:mango:E1",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "311",
    }
    method, finish = cmd_params(write, "f0")
    assert method == "telephony.externalcall.finish"
    assert finish == {
        "CALL_ID": "$result[r0][CALL_ID]",
        "USER_ID": "7",
        "DURATION": "95",
        "STATUS_CODE": "200",
        "ADD_TO_CHAT": "0",
        "RECORD_URL": "https://rec.example/1.mp3",
    }


@respx.mock
async def test_log_calls_after_a_lost_answer_finds_the_call_instead_of_sending_it_again():
    route = respx.post(f"{APP}/batch.json")
    route.side_effect = [
        respx.MockResponse(json={"result": {"result": {"x0": []}, "result_error": []}}),
        respx.MockResponse(502, json={"error": "BAD_GATEWAY"}),  # the portal did the work, the answer is lost
        respx.MockResponse(json={"result": {"result": {"x0": [{**FINISHED, "ID": "9001"}]}, "result_error": []}}),
    ]
    crm = client(Tokens("oauth-token-1"))
    with pytest.raises(CrmAmbiguous):
        await crm.log_calls([CALL])
    assert await crm.log_calls([CALL]) == {"41": "9001"}
    assert route.call_count == 3
    assert all("telephony.externalcall" not in json.dumps(body_of(c)) for c in (route.calls[0], route.calls[2]))


@respx.mock
async def test_an_inbound_webhook_cannot_log_calls_and_says_so():
    route = respx.post(f"{HOOK}/batch.json").respond(json={"result": {"result": []}})
    with pytest.raises(ExternalCallsNeedApp, match="app"):
        await client().log_calls([CALL])
    assert route.call_count == 0
    assert issubclass(ExternalCallsNeedApp, CrmRequestError)  # the outbox gives the call up, it does not retry
    # The portal's own refusal (a webhook passed off as an app) reads the same.
    respx.post(f"{APP}/batch.json").mock(
        side_effect=[
            respx.MockResponse(json={"result": {"result": {"x0": []}, "result_error": []}}),
            respx.MockResponse(
                json={
                    "result": {
                        "result": [],
                        "result_error": {
                            "r0": {
                                "error": "WRONG_AUTH_TYPE",
                                "error_description": "Current authorization type is denied",
                            },
                            "f0": {"error": "ERROR_CORE", "error_description": "Call is not found"},
                        },
                    }
                }
            ),
        ]
    )
    with pytest.raises(ExternalCallsNeedApp):
        await client(Tokens("oauth-token-1")).log_calls([CALL])


def test_a_completed_call_record_activity_is_not_mirrored_as_a_task():
    # Bitrix24's telephony files each call as an activity and completes it when the call ends.
    # Mirrored as a task, it would read as "the manager completed a task on the deal after the
    # call" and silence call_not_logged; a planned call the manager set up is still a task.
    from integrations.base import TaskDeleted, TaskUpserted
    from integrations.bitrix24 import mapping

    record = {
        "ID": "10240",
        "OWNER_TYPE_ID": "2",
        "OWNER_ID": "4521",
        "TYPE_ID": "2",
        "PROVIDER_ID": "VOXIMPLANT_CALL",
        "SUBJECT": "Исходящий звонок +79991234567",
        "RESPONSIBLE_ID": "7",
        "DEADLINE": "2025-11-24T19:06:40+03:00",
        "END_TIME": "2025-11-24T19:08:15+03:00",
        "COMPLETED": "Y",
        "CREATED": "2025-11-24T19:08:15+03:00",
        "LAST_UPDATED": "2025-11-24T19:08:15+03:00",
        "AUTHOR_ID": "7",
    }
    assert mapping.activity(record) == TaskDeleted("act:10240")
    planned = {**record, "PROVIDER_ID": "CRM_TODO", "COMPLETED": "N"}
    ev = mapping.activity(planned)
    assert isinstance(ev, TaskUpserted) and ev.deal_id == "4521" and not ev.is_completed
    still_open_call = {**record, "COMPLETED": "N"}
    assert isinstance(mapping.activity(still_open_call), TaskUpserted)
