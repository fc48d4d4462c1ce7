"""A small, deterministic sales team for the amoCRM emulator, and webhook bodies to replay its changes.

`seed_demo` lays out a week or two of history relative to `now`, so whatever day the demo runs
on there are fresh leads, leads stuck in a stage, overdue tasks and leads with no task at all.
"""

from __future__ import annotations

from typing import Any

from .emulator import LOST_STATUS_ID, WON_STATUS_ID, EmulatorState

DEMO_TOKEN = "demo-token"
DEMO_SUBDOMAIN = "demoshop"
DEMO_PIPELINE_ID = 4100000

HOUR = 3600
DAY = 24 * HOUR

HEAD, VOLKOV, MOROZOVA, LEBEDEV = 8100001, 8100002, 8100003, 8100004
FIRST_CONTACT, TALKS, PROPOSAL, DECIDING = 41000001, 41000002, 41000003, 41000004

USERS = (
    (HEAD, "Ольга Смирнова", "o.smirnova@demoshop.example", True),
    (VOLKOV, "Дмитрий Волков", "d.volkov@demoshop.example", False),
    (MOROZOVA, "Екатерина Морозова", "e.morozova@demoshop.example", False),
    (LEBEDEV, "Игорь Лебедев", "i.lebedev@demoshop.example", False),
)

STAGES = (
    (FIRST_CONTACT, "Первичный контакт", 10),
    (TALKS, "Переговоры", 20),
    (PROPOSAL, "КП отправлено", 30),
    (DECIDING, "Принимают решение", 40),
)

# Phones are deliberately written the many ways managers type them.
CONTACTS = (
    (33000001, "Анна Кузнецова", ("8 912 345-67-01",)),
    (33000002, "Сергей Петров", ("+7 (912) 345-67-02",)),
    (33000003, "Мария Иванова", ("79123456703",)),
    (33000004, "Алексей Соколов", ("+7 912 345 67 04",)),
    (33000005, "Наталья Попова", ("8(912)3456705",)),
    (33000006, "Павел Новиков", ("+79123456706",)),
    (33000007, "Елена Фёдорова", ("8-912-345-67-07",)),
    (33000008, "Андрей Козлов", ("+7 (912) 345-67-08", "8 343 210-00-08")),
    (33000009, "Ирина Васильева", ("79123456709",)),
    (33000010, "Михаил Зайцев", ("8 912 345-67-10",)),
    (33000011, "Татьяна Павлова", ("+7 (912) 345-67-11",)),
    (33000012, "Виктор Семёнов", ()),
)

# (id, name, price, manager, contact id or None, stage path as (status, days ago)).
# The first step is when the lead was created; every later one becomes a move_lead.
LEADS: tuple[tuple[int, str, int, int, int | None, tuple[tuple[int, float], ...]], ...] = (
    (
        31000001,
        "Поставка оборудования для ООО «Ромашка»",
        480000,
        VOLKOV,
        33000001,
        ((FIRST_CONTACT, 21), (TALKS, 16), (PROPOSAL, 9)),
    ),
    (31000002, "Кассовое оборудование для сети кофеен «Зерно»", 215000, MOROZOVA, 33000002, ((FIRST_CONTACT, 3),)),
    (31000003, "Видеонаблюдение на склад ИП Гусев", 96000, LEBEDEV, 33000003, ((FIRST_CONTACT, 12), (TALKS, 8))),
    (
        31000004,
        "Серверная стойка для «ТехноПарк Урал»",
        1250000,
        VOLKOV,
        33000004,
        ((FIRST_CONTACT, 30), (TALKS, 25), (PROPOSAL, 18), (DECIDING, 6)),
    ),
    (
        31000005,
        "Ноутбуки для бухгалтерии ООО «Вектор»",
        340000,
        MOROZOVA,
        33000005,
        ((FIRST_CONTACT, 10), (TALKS, 7), (PROPOSAL, 2)),
    ),
    (31000006, "Wi-Fi для гостиницы «Уют»", 158000, LEBEDEV, 33000006, ((FIRST_CONTACT, 1),)),
    (31000007, "Обслуживание оргтехники, договор на год", 72000, VOLKOV, 33000007, ((FIRST_CONTACT, 40), (TALKS, 33))),
    (31000008, "МФУ для школы №17", 64000, MOROZOVA, 33000008, ((FIRST_CONTACT, 6), (TALKS, 5), (DECIDING, 1))),
    (
        31000009,
        "POS-терминалы для «Пекарни на Ленина»",
        128000,
        LEBEDEV,
        33000009,
        ((FIRST_CONTACT, 15), (TALKS, 11), (PROPOSAL, 4)),
    ),
    (
        31000010,
        "Система контроля доступа для БЦ «Меридиан»",
        890000,
        VOLKOV,
        33000010,
        ((FIRST_CONTACT, 20), (TALKS, 13), (PROPOSAL, 10), (DECIDING, 3)),
    ),
    (
        31000011,
        "Мониторы для колл-центра ООО «Связь-Плюс»",
        410000,
        MOROZOVA,
        33000011,
        ((FIRST_CONTACT, 25), (TALKS, 19), (PROPOSAL, 12), (DECIDING, 8), (WON_STATUS_ID, 2)),
    ),
    (
        31000012,
        "Источники бесперебойного питания для клиники «Здоровье»",
        187000,
        LEBEDEV,
        33000012,
        ((FIRST_CONTACT, 18), (TALKS, 14), (LOST_STATUS_ID, 5)),
    ),
    (31000013, "Заявка с сайта: принтер этикеток", 23000, VOLKOV, None, ((FIRST_CONTACT, 0.125),)),
    (
        31000014,
        "ЛВС для производственного цеха ООО «Металлист»",
        675000,
        LEBEDEV,
        33000006,
        ((FIRST_CONTACT, 9), (TALKS, 7)),
    ),
    (31000015, "Облачное хранилище на 50 рабочих мест", 120000, HEAD, 33000002, ((FIRST_CONTACT, 4), (TALKS, 2))),
)

# (id, lead id, text, due in days from now (negative = overdue), task type, created days ago).
OPEN_TASKS = (
    (52000001, 31000001, "Перезвонить, уточнить решение по КП", -2, 1, 9),
    (52000002, 31000002, "Связаться с клиентом, выяснить потребность", 1 / 24, 1, 3),
    (52000003, 31000003, "Отправить КП на видеонаблюдение", 1, 1, 8),
    (52000004, 31000004, "Встреча с техническим директором", 2, 2, 6),
    (52000005, 31000005, "Уточнить реквизиты для счёта", -0.25, 1, 2),
    (52000006, 31000009, "Согласовать дату доставки", 0.125, 1, 4),
    (52000007, 31000010, "Позвонить после совещания у клиента", 1, 1, 3),
    (52000008, 31000014, "Подготовить смету на монтаж", -3, 1, 7),
)
# Done long ago and never followed up: the lead is left with no open task.
DONE_TASK = (52000009, 31000007, "Выслать проект договора", -32, 1, 33, "Договор отправлен на почту")


def seed_demo(state: EmulatorState, now: int) -> None:
    state.account.update(subdomain=DEMO_SUBDOMAIN, current_user_id=HEAD)
    state.add_token(DEMO_TOKEN)
    for user_id, name, email, is_admin in USERS:
        state.add_user(user_id, name, email, is_admin=is_admin)
    state.add_pipeline(DEMO_PIPELINE_ID, "Продажи", STAGES, is_main=True, sort=1)

    owners = {contact_id: manager for *_, manager, contact_id, _ in LEADS}
    for contact_id, name, phones in CONTACTS:
        created = now - 45 * DAY + (contact_id % 100) * HOUR
        state.add_contact(contact_id, name, phones, owners.get(contact_id, HEAD), created_at=created)

    for lead_id, name, price, manager, contact_id, path in LEADS:
        (first_status, created_days), moves = path[0], path[1:]
        state.add_lead(
            lead_id,
            name,
            DEMO_PIPELINE_ID,
            first_status,
            price,
            manager,
            [contact_id] if contact_id else [],
            created_at=now - int(created_days * DAY),
        )
        for status_id, days_ago in moves:
            state.move_lead(lead_id, status_id, at=now - int(days_ago * DAY), by_user=manager)

    for task_id, lead_id, text, due_days, task_type, created_days in OPEN_TASKS:
        manager = state.leads[lead_id]["responsible_user_id"]
        state.add_task(
            task_id,
            lead_id,
            text,
            now + int(due_days * DAY),
            manager,
            task_type,
            created_at=now - int(created_days * DAY),
        )
    task_id, lead_id, text, due_days, task_type, created_days, result = DONE_TASK
    state.add_task(task_id, lead_id, text, now + due_days * DAY, VOLKOV, task_type, created_at=now - created_days * DAY)
    state.complete_task(task_id, result, at=now + due_days * DAY, by_user=VOLKOV)

    state.add_note(
        61000001, 31000001, "common", "Обсудили сроки поставки, ждёт КП", created_by=VOLKOV, created_at=now - 10 * DAY
    )
    state.add_note(
        61000002,
        31000001,
        "call_out",
        created_by=VOLKOV,
        created_at=now - 8 * DAY,
        params={"uniq": "call-7701", "duration": 184, "source": "mango_office", "link": "", "phone": "+79123456701"},
    )
    state.add_note(
        61000003,
        31000004,
        "common",
        "Клиент просит расширенную гарантию на 3 года",
        created_by=VOLKOV,
        created_at=now - 6 * DAY,
    )
    state.add_note(
        61000004,
        31000009,
        "call_in",
        created_by=LEBEDEV,
        created_at=now - 4 * DAY,
        params={"uniq": "call-7702", "duration": 62, "source": "mango_office", "link": "", "phone": "+79123456709"},
    )
    state.add_note(
        61000005,
        31000012,
        "common",
        "Выбрали другого поставщика: дешевле на 12%",
        created_by=LEBEDEV,
        created_at=now - 5 * DAY,
    )


# -- webhooks --------------------------------------------------------------------------------------

NOTE_TYPE_CODES = {"common": 4, "call_in": 10, "call_out": 11}
ELEMENT_TYPES = {"contacts": 1, "leads": 2, "companies": 3}


def webhook_form(state: EmulatorState, kind: str, entity: dict | list[dict], **extra: Any) -> list[tuple[str, str]]:
    """Renders an amoCRM webhook body as ordered (key, value) pairs with PHP bracket keys; urlencode to post.

    `entity` is a lead/task/note as the emulator stores it or as the API returns it (a list gives
    several entities in one delivery). For "leads.status" the previous stage comes from
    `old_status_id`/`old_pipeline_id` in `extra` or the entity, else from the lead's latest move.
    """
    if kind not in _RENDERERS:
        raise ValueError(f"unknown webhook kind {kind!r}; expected one of {sorted(_RENDERERS)}")
    rows: list[tuple[str, Any]] = []
    for index, item in enumerate(entity if isinstance(entity, list) else [entity]):
        rows.extend(_RENDERERS[kind](state, kind.split(".")[1], index, {**item, **extra}))
    account = state.account
    rows += [
        ("account[subdomain]", account["subdomain"]),
        ("account[id]", account["id"]),
        ("account[_links][self]", f"https://{account['subdomain']}.amocrm.ru"),
    ]
    return [(key, _text(value)) for key, value in rows]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _lead_rows(state: EmulatorState, action: str, index: int, lead: dict) -> list[tuple[str, Any]]:
    prefix = f"leads[{action}][{index}]"
    if action == "delete":
        fields = [("id", lead["id"]), ("status_id", lead["status_id"]), ("pipeline_id", lead["pipeline_id"])]
        return [(f"{prefix}[{k}]", v) for k, v in fields]
    fields = [
        ("id", lead["id"]),
        ("name", lead.get("name")),
        ("status_id", lead["status_id"]),
        ("price", lead.get("price")),
        ("responsible_user_id", lead.get("responsible_user_id")),
        ("last_modified", lead.get("updated_at")),
        ("modified_user_id", lead.get("updated_by")),
        ("created_user_id", lead.get("created_by")),
        ("date_create", lead.get("created_at")),
        ("pipeline_id", lead["pipeline_id"]),
        ("account_id", lead.get("account_id", state.account["id"])),
        ("created_at", lead.get("created_at")),
        ("updated_at", lead.get("updated_at")),
    ]
    if action == "status":
        old_status, old_pipeline = _previous_stage(state, lead)
        fields += [("old_status_id", old_status), ("old_pipeline_id", old_pipeline)]
    return [(f"{prefix}[{k}]", v) for k, v in fields]


def _previous_stage(state: EmulatorState, lead: dict) -> tuple[int, int]:
    if lead.get("old_status_id") is not None:
        return lead["old_status_id"], lead.get("old_pipeline_id", lead["pipeline_id"])
    moves = [e for e in state.events if e["type"] == "lead_status_changed" and e["entity_id"] == lead["id"]]
    if not moves:
        raise ValueError(f"lead {lead['id']} never moved; pass old_status_id for a leads.status webhook")
    before = max(moves, key=lambda e: e["created_at"])["value_before"][0]["lead_status"]
    return before["id"], before["pipeline_id"]


def _task_rows(state: EmulatorState, action: str, index: int, task: dict) -> list[tuple[str, Any]]:
    fields = [
        ("id", task["id"]),
        ("element_id", task.get("entity_id")),
        ("element_type", ELEMENT_TYPES.get(task.get("entity_type", "leads"), 2)),
        ("task_type", task.get("task_type_id", 1)),
        ("date_create", task.get("created_at")),
        ("created_user_id", task.get("created_by")),
        ("last_modified", task.get("updated_at")),
        ("text", task.get("text")),
        ("responsible_user_id", task.get("responsible_user_id")),
        ("complete_till", task.get("complete_till")),
        ("status", 1 if task.get("is_completed") else 0),
        ("group_id", task.get("group_id", 0)),
        ("account_id", task.get("account_id", state.account["id"])),
    ]
    if action == "update" and task.get("is_completed"):
        fields.append(("action_close", 1))
        result = task.get("result")
        if isinstance(result, dict) and result.get("text"):
            fields.append(("result][text", result["text"]))
    return [(f"task[{action}][{index}][{k}]", v) for k, v in fields]


def _note_rows(state: EmulatorState, action: str, index: int, note: dict) -> list[tuple[str, Any]]:
    note_type, params = note.get("note_type", "common"), note.get("params") or {}
    head = [
        ("id", note["id"]),
        ("note_type", NOTE_TYPE_CODES.get(note_type, 4)),
        ("element_id", note["entity_id"]),
        ("element_type", 2),
    ]
    account_id = note.get("account_id", state.account["id"])
    if note_type == "common":
        fields = [
            *head,
            ("text", params.get("text")),
            ("created_by", note.get("created_by")),
            ("date_create", note.get("created_at")),
            ("last_modified", note.get("updated_at")),
            ("responsible_user_id", note.get("responsible_user_id")),
            ("account_id", account_id),
        ]
    else:
        fields = [
            *head,
            ("created_by", note.get("created_by")),
            ("date_create", note.get("created_at")),
            ("account_id", account_id),
            ("metadata][UNIQ", params.get("uniq")),
            ("metadata][DURATION", params.get("duration")),
            ("metadata][PHONE", params.get("phone")),
            ("metadata][SRC", params.get("source")),
        ]
        if params.get("link"):
            fields.append(("metadata][LINK", params["link"]))
    prefix = f"leads[note][{index}]"
    return [*((f"{prefix}[note][{k}]", v) for k, v in fields), (f"{prefix}[type]", "lead")]


_RENDERERS = {
    "leads.add": _lead_rows,
    "leads.update": _lead_rows,
    "leads.status": _lead_rows,
    "leads.delete": _lead_rows,
    "task.add": _task_rows,
    "task.update": _task_rows,
    "note.add": _note_rows,
}
