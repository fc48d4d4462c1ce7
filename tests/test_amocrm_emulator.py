"""The amoCRM emulator must keep amoCRM's wire quirks, or clients tested against it learn the wrong lessons."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from integrations.amocrm.demo_data import DEMO_SUBDOMAIN, DEMO_TOKEN, seed_demo, webhook_form
from integrations.amocrm.emulator import EmulatorState, create_emulator_app

NOW = 1764000000
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state() -> EmulatorState:
    st = EmulatorState()
    st.add_token(TOKEN)
    st.add_user(8100001, "Ольга Смирнова", "o@example.com")
    st.add_pipeline(4100000, "Продажи", [(41000001, "Первичный контакт", 10), (41000002, "Переговоры", 20)])
    return st


def make_client(state: EmulatorState, rate_limit_per_s: int | None = None) -> TestClient:
    return TestClient(create_emulator_app(state, rate_limit_per_s=rate_limit_per_s))


def add_leads(state: EmulatorState, count: int) -> None:
    for i in range(count):
        state.add_lead(31000001 + i, f"Сделка {i}", 4100000, 41000001, 1000 * i, created_at=NOW - 100 + i)


# -- lists and paging ----------------------------------------------------------------------------


def test_empty_list_is_204_without_body(state: EmulatorState) -> None:
    resp = make_client(state).get("/api/v4/leads", headers=AUTH)
    assert resp.status_code == 204
    assert resp.content == b""


def test_page_past_the_end_is_204(state: EmulatorState) -> None:
    add_leads(state, 3)
    resp = make_client(state).get("/api/v4/leads", params={"limit": 2, "page": 3}, headers=AUTH)
    assert resp.status_code == 204
    assert resp.content == b""


def test_paging_follows_next_link_until_absent(state: EmulatorState) -> None:
    add_leads(state, 5)
    client = make_client(state)
    first = client.get("/api/v4/leads?filter[pipeline_id]=4100000&limit=2", headers=AUTH).json()
    assert first["_page"] == 1
    assert [lead["id"] for lead in first["_embedded"]["leads"]] == [31000001, 31000002]
    assert first["_links"]["self"]["href"] == "http://testserver/api/v4/leads?filter[pipeline_id]=4100000&limit=2"
    next_href = first["_links"]["next"]["href"]
    assert next_href == "http://testserver/api/v4/leads?filter[pipeline_id]=4100000&limit=2&page=2"

    second = client.get(next_href, headers=AUTH).json()
    assert second["_page"] == 2
    assert "page=3" in second["_links"]["next"]["href"]
    assert second["_links"]["next"]["href"].count("page=") == 1

    last = client.get(second["_links"]["next"]["href"], headers=AUTH).json()
    assert [lead["id"] for lead in last["_embedded"]["leads"]] == [31000005]
    assert "next" not in last["_links"]


def test_exact_last_page_has_no_next(state: EmulatorState) -> None:
    add_leads(state, 4)
    body = make_client(state).get("/api/v4/leads", params={"limit": 2, "page": 2}, headers=AUTH).json()
    assert len(body["_embedded"]["leads"]) == 2
    assert "next" not in body["_links"]


@pytest.mark.parametrize(("path", "limit"), [("/api/v4/leads", 251), ("/api/v4/events", 101), ("/api/v4/leads", 0)])
def test_limit_over_max_is_400_problem(state: EmulatorState, path: str, limit: int) -> None:
    add_leads(state, 1)
    resp = make_client(state).get(path, params={"limit": limit}, headers=AUTH)
    assert resp.status_code == 400
    assert resp.json()["status"] == 400


def test_events_accept_limit_100(state: EmulatorState) -> None:
    add_leads(state, 1)
    state.move_lead(31000001, 41000002, at=NOW, by_user=8100001)
    resp = make_client(state).get("/api/v4/events", params={"limit": 100}, headers=AUTH)
    assert resp.status_code == 200


# -- auth, rate limit, faults --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}])
def test_bad_or_missing_token_is_401_problem(state: EmulatorState, headers: dict) -> None:
    resp = make_client(state).get("/api/v4/account", headers=headers)
    assert resp.status_code == 401
    body = resp.json()
    assert body["title"] == "Unauthorized"
    assert body["status"] == 401
    assert body["type"] == "https://httpstatus.es/401"


def test_rate_limit_rejects_the_eighth_request_in_a_second_and_recovers(state: EmulatorState) -> None:
    clock = FakeClock()
    state.clock = clock
    client = make_client(state, rate_limit_per_s=7)
    for i in range(7):
        clock.now = 1000.0 + i * 0.1
        assert client.get("/api/v4/account", headers=AUTH).status_code == 200
    clock.now = 1000.9
    rejected = client.get("/api/v4/account", headers=AUTH)
    assert rejected.status_code == 429
    assert rejected.content == b""
    assert state.rejected_429 == 1

    # The window rolls: once the first request is a full second old, one slot frees up.
    clock.now = 1001.0
    assert client.get("/api/v4/account", headers=AUTH).status_code == 200
    assert client.get("/api/v4/account", headers=AUTH).status_code == 429
    assert state.rejected_429 == 2


def test_rate_limit_is_per_token(state: EmulatorState) -> None:
    state.clock = FakeClock()
    state.add_token("other")
    client = make_client(state, rate_limit_per_s=7)
    for _ in range(7):
        client.get("/api/v4/account", headers=AUTH)
    assert client.get("/api/v4/account", headers=AUTH).status_code == 429
    assert client.get("/api/v4/account", headers={"Authorization": "Bearer other"}).status_code == 200


def test_fail_next_injects_faults_then_recovers(state: EmulatorState) -> None:
    state.fail_next(2, status=503)
    client = make_client(state)
    assert [client.get("/api/v4/account", headers=AUTH).status_code for _ in range(3)] == [503, 503, 200]


def test_request_log_records_method_path_and_query(state: EmulatorState) -> None:
    client = make_client(state)
    client.get("/api/v4/tasks?filter[is_completed]=0&limit=250", headers=AUTH)
    client.get("/api/v4/account")
    assert state.request_log == [
        ("GET", "/api/v4/tasks", "filter[is_completed]=0&limit=250"),
        ("GET", "/api/v4/account", ""),
    ]


# -- OAuth -----------------------------------------------------------------------------------------


def oauth(client: TestClient, **body: str) -> httpx.Response:
    base = {"client_id": "cid", "client_secret": "secret", "redirect_uri": "https://crmwatch.example/cb"}
    return client.post("/oauth2/access_token", json={**base, **body})


def test_refresh_tokens_rotate_and_are_single_use(state: EmulatorState) -> None:
    state.add_oauth_client("cid", "secret", "https://crmwatch.example/cb")
    client = make_client(state)
    code = state.issue_auth_code("cid")

    first = oauth(client, grant_type="authorization_code", code=code)
    assert first.status_code == 200
    pair = first.json()
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 86400
    assert client.get("/api/v4/account", headers={"Authorization": f"Bearer {pair['access_token']}"}).status_code == 200
    assert oauth(client, grant_type="authorization_code", code=code).status_code == 400

    second = oauth(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != pair["refresh_token"]
    assert rotated["access_token"] != pair["access_token"]

    reused = oauth(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["hint"] == "Token has been revoked"
    assert reused.json()["title"] == "Некорректный запрос"
    assert oauth(client, grant_type="refresh_token", refresh_token=rotated["refresh_token"]).status_code == 200


def test_oauth_rejects_wrong_secret(state: EmulatorState) -> None:
    state.add_oauth_client("cid", "secret", "https://crmwatch.example/cb")
    code = state.issue_auth_code("cid")
    resp = oauth(make_client(state), grant_type="authorization_code", code=code, client_secret="wrong")
    assert resp.status_code == 401
    assert code in state.auth_codes


# -- entities --------------------------------------------------------------------------------------


def test_leads_filter_by_id_with_contacts_and_single_lead(state: EmulatorState) -> None:
    state.add_contact(33000001, "Анна Кузнецова", ["+7 (999) 123-45-67"], created_at=NOW)
    add_leads(state, 3)
    state.leads[31000002]["contact_ids"] = [33000001]
    client = make_client(state)

    query = [("with", "contacts"), ("filter[id][]", "31000002"), ("filter[id][]", "31000003")]
    leads = client.get("/api/v4/leads", params=query, headers=AUTH).json()["_embedded"]["leads"]
    assert [lead["id"] for lead in leads] == [31000002, 31000003]
    assert [(c["id"], c["is_main"]) for c in leads[0]["_embedded"]["contacts"]] == [(33000001, True)]
    assert leads[1]["_embedded"]["contacts"] == []
    assert leads[0]["is_deleted"] is False and leads[0]["account_id"] == 29876543

    assert client.get("/api/v4/leads/31000002", headers=AUTH).json()["name"] == "Сделка 1"
    assert client.get("/api/v4/leads/99", headers=AUTH).status_code == 404


def test_contact_phones_shape_and_null_without_phones(state: EmulatorState) -> None:
    state.add_contact(33000001, "Анна Кузнецова", ["8 912 345-67-01"], created_at=NOW)
    state.add_contact(33000002, "Без Телефона", [], created_at=NOW)
    contacts = make_client(state).get("/api/v4/contacts", headers=AUTH).json()["_embedded"]["contacts"]
    field = contacts[0]["custom_fields_values"][0]
    assert (field["field_code"], field["field_type"], field["field_name"]) == ("PHONE", "multitext", "Телефон")
    assert field["values"][0]["value"] == "8 912 345-67-01"
    assert field["values"][0]["enum_code"] == "WORK"
    assert contacts[1]["custom_fields_values"] is None


def test_move_lead_records_event_like_amocrm(state: EmulatorState) -> None:
    add_leads(state, 1)
    state.move_lead(31000001, 41000002, at=NOW, by_user=8100001)
    state.move_lead(31000001, 142, at=NOW + 60, by_user=8100001)
    client = make_client(state)
    events = client.get("/api/v4/events", params={"filter[type]": "lead_status_changed"}, headers=AUTH).json()
    newest, older = events["_embedded"]["events"]
    assert (newest["created_at"], older["created_at"]) == (NOW + 60, NOW)
    assert newest["value_after"] == [{"lead_status": {"id": 142, "pipeline_id": 4100000}}]
    assert newest["value_before"] == [{"lead_status": {"id": 41000002, "pipeline_id": 4100000}}]
    assert newest["entity_type"] == "lead" and newest["_embedded"] == {"entity": {"id": 31000001}}
    assert state.leads[31000001]["closed_at"] == NOW + 60

    recent = client.get("/api/v4/events", params={"filter[created_at][from]": NOW + 1}, headers=AUTH).json()
    assert [e["created_at"] for e in recent["_embedded"]["events"]] == [NOW + 60]
    other = client.get("/api/v4/events", params={"filter[type]": "lead_added"}, headers=AUTH)
    assert other.status_code == 204


def test_task_writes_are_read_back(state: EmulatorState) -> None:
    add_leads(state, 1)
    client = make_client(state)
    created = client.post(
        "/api/v4/tasks",
        headers=AUTH,
        json=[
            {
                "text": "Перезвонить",
                "complete_till": NOW + 3600,
                "entity_id": 31000001,
                "entity_type": "leads",
                "task_type_id": 1,
                "responsible_user_id": 8100001,
                "request_id": "r1",
            }
        ],
    )
    assert created.status_code == 200
    row = created.json()["_embedded"]["tasks"][0]
    assert row["request_id"] == "r1"
    assert row["_links"]["self"]["href"].endswith(f"/api/v4/tasks/{row['id']}")

    open_tasks = client.get("/api/v4/tasks", params={"filter[is_completed]": 0}, headers=AUTH).json()
    task = open_tasks["_embedded"]["tasks"][0]
    assert (task["id"], task["entity_type"], task["result"]) == (row["id"], "leads", [])
    assert client.get("/api/v4/leads/31000001", headers=AUTH).json()["closest_task_at"] == NOW + 3600

    patched = client.patch(
        "/api/v4/tasks", headers=AUTH, json=[{"id": row["id"], "is_completed": True, "result": {"text": "Готово"}}]
    )
    assert patched.status_code == 200
    assert client.get("/api/v4/tasks", params={"filter[is_completed]": 0}, headers=AUTH).status_code == 204
    done = client.get("/api/v4/tasks", params={"filter[is_completed]": 1}, headers=AUTH).json()
    assert done["_embedded"]["tasks"][0]["result"] == {"text": "Готово"}


def test_calls_are_filed_where_amocrm_files_them_and_listed_by_card(state: EmulatorState) -> None:
    """POST /api/v4/calls: one open lead → the lead's card; two → the contact's; a company's number
    → the company's card; nobody with the number → dropped. Matched on the last 10 digits."""
    state.add_contact(9001, "Один", phones=["+7 (999) 000-00-01"])
    state.add_lead(31000001, "Одна сделка", 4100000, 41000001, contact_ids=[9001])
    state.add_contact(9002, "Два", phones=["8 999 000 00 02"])
    state.add_lead(31000002, "Первая", 4100000, 41000001, contact_ids=[9002])
    state.add_lead(31000003, "Вторая", 4100000, 41000001, contact_ids=[9002])
    state.add_company(9500, "ООО Ромашка", phones=["+7 999 000-00-03"])
    client = make_client(state)

    def call(phone: str, uniq: str) -> dict:
        return {"direction": "inbound", "uniq": uniq, "duration": 5, "source": "t", "phone": phone, "request_id": uniq}

    items = [call("79990000001", "u1"), call("+7 999 000-00-02", "u2"), call("89990000003", "u3"), call("+7999", "u4")]
    resp = client.post("/api/v4/calls", json=items, headers=AUTH)
    assert resp.status_code == 200
    answered = {r["request_id"]: (r["entity_type"], r["entity_id"]) for r in resp.json()["_embedded"]["calls"]}
    assert answered == {"u1": ("leads", 31000001), "u2": ("contacts", 9002), "u3": ("companies", 9500)}

    def uniqs(entity: str, **params: str) -> list[str]:
        got = client.get(f"/api/v4/{entity}/notes", params=params, headers=AUTH)
        return [] if got.status_code == 204 else [n["params"]["uniq"] for n in got.json()["_embedded"]["notes"]]

    calls = {"filter[note_type][]": "call_in"}
    assert uniqs("leads", **calls) == ["u1"] and uniqs("contacts", **calls) == ["u2"]
    assert uniqs("companies", **calls) == ["u3"]
    assert uniqs("contacts", **{**calls, "filter[updated_at][from]": str(state.unix_now() + 60)}) == []
    assert client.get("/api/v4/tasks/notes", headers=AUTH).status_code == 404
    # The same uniq again is a second call: amoCRM does not deduplicate, so crmwatch must read back.
    client.post("/api/v4/calls", json=[call("79990000001", "u1")], headers=AUTH)
    assert uniqs("leads", **calls) == ["u1", "u1"]


def test_writes_over_50_items_or_unknown_entities_are_400(state: EmulatorState) -> None:
    add_leads(state, 1)
    client = make_client(state)
    too_many = [{"text": "x", "complete_till": NOW, "entity_id": 31000001, "entity_type": "leads"}] * 51
    assert client.post("/api/v4/tasks", headers=AUTH, json=too_many).status_code == 400
    assert not state.tasks
    bad_note = [{"entity_id": 999, "note_type": "common", "params": {"text": "x"}}]
    assert client.post("/api/v4/leads/notes", headers=AUTH, json=bad_note).status_code == 400
    good_note = [{"entity_id": 31000001, "note_type": "common", "params": {"text": "Позвонить завтра"}}]
    assert client.post("/api/v4/leads/notes", headers=AUTH, json=good_note).status_code == 200
    notes = client.get("/api/v4/leads/notes", headers=AUTH).json()["_embedded"]["notes"]
    assert notes[0]["params"] == {"text": "Позвонить завтра"} and notes[0]["entity_id"] == 31000001


async def test_works_through_asgi_transport(state: EmulatorState) -> None:
    add_leads(state, 1)
    transport = httpx.ASGITransport(app=create_emulator_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="https://demoshop.amocrm.ru") as http:
        resp = await http.get("/api/v4/leads", headers=AUTH)
    assert resp.status_code == 200
    assert resp.json()["_links"]["self"]["href"] == "https://demoshop.amocrm.ru/api/v4/leads"


# -- demo data and webhooks ----------------------------------------------------------------------


def test_seed_demo_builds_a_small_sales_team() -> None:
    state = EmulatorState()
    seed_demo(state, NOW)
    client = make_client(state)
    demo = {"Authorization": f"Bearer {DEMO_TOKEN}"}

    users = client.get("/api/v4/users", headers=demo).json()["_embedded"]["users"]
    assert len(users) == 4
    assert "Ольга Смирнова" in [u["name"] for u in users]
    pipelines = client.get("/api/v4/leads/pipelines", headers=demo).json()["_embedded"]["pipelines"]
    assert [p["name"] for p in pipelines] == ["Продажи"]
    status_ids = [s["id"] for s in pipelines[0]["_embedded"]["statuses"]]
    assert status_ids == [41000001, 41000002, 41000003, 41000004, 142, 143]

    leads = client.get("/api/v4/leads", params={"limit": 250}, headers=demo).json()["_embedded"]["leads"]
    contacts = client.get("/api/v4/contacts", params={"limit": 250}, headers=demo).json()["_embedded"]["contacts"]
    assert len(leads) == 15 and len(contacts) == 12
    assert {lead["responsible_user_id"] for lead in leads} >= {8100002, 8100003, 8100004}
    assert {lead["status_id"] for lead in leads} >= {41000001, 41000002, 41000003, 41000004}

    open_tasks = [t for t in state.tasks.values() if not t["is_completed"]]
    assert sum(t["complete_till"] < NOW for t in open_tasks) >= 2
    assert {lead["id"] for lead in leads} - {t["entity_id"] for t in open_tasks}
    assert state.events and all(e["created_at"] < NOW for e in state.events)
    assert state.account["subdomain"] == DEMO_SUBDOMAIN

    again = EmulatorState()
    seed_demo(again, NOW)
    assert again.leads == state.leads and again.events == state.events


LEAD_STATUS_KEYS = [
    "leads[status][0][id]",
    "leads[status][0][name]",
    "leads[status][0][status_id]",
    "leads[status][0][price]",
    "leads[status][0][responsible_user_id]",
    "leads[status][0][last_modified]",
    "leads[status][0][modified_user_id]",
    "leads[status][0][created_user_id]",
    "leads[status][0][date_create]",
    "leads[status][0][pipeline_id]",
    "leads[status][0][account_id]",
    "leads[status][0][created_at]",
    "leads[status][0][updated_at]",
    "leads[status][0][old_status_id]",
    "leads[status][0][old_pipeline_id]",
    "account[subdomain]",
    "account[id]",
    "account[_links][self]",
]


def test_webhook_form_leads_status_matches_fixture_keys() -> None:
    state = EmulatorState()
    seed_demo(state, NOW)
    state.move_lead(31000001, 41000004, at=NOW, by_user=8100002)
    rows = webhook_form(state, "leads.status", state.leads[31000001])
    assert [k for k, _ in rows] == LEAD_STATUS_KEYS
    values = dict(rows)
    assert values["leads[status][0][status_id]"] == "41000004"
    assert values["leads[status][0][old_status_id]"] == "41000003"
    assert values["leads[status][0][old_pipeline_id]"] == "4100000"
    assert values["account[subdomain]"] == "demoshop"
    assert values["account[_links][self]"] == "https://demoshop.amocrm.ru"
    # What a webhook receiver would parse back from the urlencoded body.
    assert dict(parse_qsl(urlencode(rows)))["leads[status][0][name]"] == "Поставка оборудования для ООО «Ромашка»"

    explicit = dict(webhook_form(state, "leads.status", state.leads[31000002], old_status_id=41000009))
    assert explicit["leads[status][0][old_status_id]"] == "41000009"


def test_webhook_form_tasks_and_notes() -> None:
    state = EmulatorState()
    seed_demo(state, NOW)
    state.complete_task(52000001, "Клиент согласен на встречу", at=NOW)
    task = dict(webhook_form(state, "task.update", state.tasks[52000001]))
    assert task["task[update][0][status]"] == "1"
    assert task["task[update][0][action_close]"] == "1"
    assert task["task[update][0][result][text]"] == "Клиент согласен на встречу"
    assert task["task[update][0][element_type]"] == "2"

    added = webhook_form(state, "task.add", state.tasks[52000003])
    assert [k.removeprefix("task[add][0]") for k, _ in added][:13] == [
        "[id]",
        "[element_id]",
        "[element_type]",
        "[task_type]",
        "[date_create]",
        "[created_user_id]",
        "[last_modified]",
        "[text]",
        "[responsible_user_id]",
        "[complete_till]",
        "[status]",
        "[group_id]",
        "[account_id]",
    ]
    deleted = webhook_form(state, "leads.delete", state.leads[31000003])
    assert [k for k, _ in deleted][:3] == [
        "leads[delete][0][id]",
        "leads[delete][0][status_id]",
        "leads[delete][0][pipeline_id]",
    ]

    call = dict(webhook_form(state, "note.add", state.notes[61000002]))
    assert call["leads[note][0][note][note_type]"] == "11"
    assert call["leads[note][0][note][metadata][DURATION]"] == "184"
    assert call["leads[note][0][type]"] == "lead"
    common = dict(webhook_form(state, "note.add", state.notes[61000001]))
    assert common["leads[note][0][note][text]"] == "Обсудили сроки поставки, ждёт КП"

    two = webhook_form(state, "leads.update", [state.leads[31000001], state.leads[31000002]])
    assert ("leads[update][1][id]", "31000002") in two
    with pytest.raises(ValueError):
        webhook_form(state, "leads.bogus", state.leads[31000001])
    assert urlsplit(dict(two)["account[_links][self]"]).hostname == "demoshop.amocrm.ru"
