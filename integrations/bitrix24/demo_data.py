"""A small Bitrix24 portal for `crmwatch demo`: a sales team of three, two pipelines, a day's work."""

from __future__ import annotations

from .emulator import Bitrix24Emulator

HOUR = 3600


def seed_portal(state: Bitrix24Emulator, now: float) -> None:
    state.add_user(1, "Ольга", "Смирнова", "head@portal.example")
    state.add_user(7, "Анна", "Петрова", "anna@portal.example")
    state.add_user(8, "Борис", "Смирнов", "boris@portal.example")
    for status_id, name, sort, sem in (
        ("NEW", "Новая", 10, None),
        ("PREPARATION", "Подготовка КП", 20, None),
        ("EXECUTING", "В работе", 30, None),
        ("WON", "Сделка успешна", 60, "S"),
        ("LOSE", "Сделка провалена", 70, "F"),
    ):
        state.add_stage(0, status_id, name, sort, sem)
    state.add_category(3, "Опт", 200)
    for status_id, name, sort, sem in (
        ("C3:NEW", "Заявка", 10, None),
        ("C3:WON", "Отгружено", 50, "S"),
        ("C3:LOSE", "Отказ", 60, "F"),
    ):
        state.add_stage(3, status_id, name, sort, sem)
    state.add_contact(311, "Иван Клиентов", ["+7 912 345-67-01"], assigned_by=7, at=now - 300 * HOUR)
    state.add_contact(312, "ООО «Ромашка»", ["8 (495) 123-45-67"], assigned_by=8, at=now - 300 * HOUR)
    # Client companies (the ABC/XYZ report by company names them).
    state.add_company(401, "ООО «Ромашка»", ["8 (495) 123-45-67"], assigned_by=8, at=now - 300 * HOUR)
    state.add_company(402, "ИП Климов", ["+7 912 345-67-09"], assigned_by=8, at=now - 250 * HOUR)
    state.add_deal(
        4521, "Поставка оборудования", "NEW", assigned_by=7, opportunity=150000, contact_id=311, at=now - 200 * HOUR
    )
    state.move_deal(4521, "PREPARATION", at=now - 150 * HOUR)
    state.add_deal(
        4522,
        "Бумага офисная, опт",
        "C3:NEW",
        category_id=3,
        assigned_by=8,
        opportunity=48000,
        contact_id=312,
        company_id=401,
        at=now - 90 * HOUR,
    )
    state.add_deal(
        4523, "Кондиционеры в офис", "EXECUTING", assigned_by=8, opportunity=260000, company_id=402, at=now - 70 * HOUR
    )
    state.add_deal(4524, "Картриджи", "WON", assigned_by=7, opportunity=12000, company_id=401, at=now - 50 * HOUR)
    state.add_activity(10233, 4521, "Позвонить клиенту по КП", now - 30 * HOUR, responsible=7, at=now - 60 * HOUR)
    state.add_task(881, 4522, "Подготовить спецификацию", now + 20 * HOUR, responsible=8, at=now - 20 * HOUR)
    state.add_comment(501, 4523, "ок", author=8, at=now - 2 * HOUR)


def script(state: Bitrix24Emulator, now: float, *, call_at: float | None = None) -> list[tuple[tuple[str, str], str]]:
    """Changes a manager makes during the demo (titled in Russian and English), and the event body
    Bitrix24 would post for each.
    `call_at`: when the missed call rang (the demo puts it in working time, so its window has run)."""
    steps: list[tuple[tuple[str, str], str]] = []
    state.move_deal(4523, "WON", at=now - 60)
    steps.append(
        (
            ("Сделка «Кондиционеры в офис» выиграна", "The deal “Кондиционеры в офис” is won"),
            state.event_form("ONCRMDEALUPDATE", 4523),
        )
    )
    act = state.add_activity(None, 4522, "Согласовать отгрузку", now + 4 * HOUR, responsible=8, at=now - 30)
    steps.append(
        (
            ("Менеджер запланировал дело", "A manager planned an activity"),
            state.event_form("ONCRMACTIVITYADD", act["ID"]),
        )
    )
    # The portal's own telephony: a client's call nobody answered and nobody returned.
    state.add_call(
        "externalCall.demo.1",
        user=7,
        phone="+7 912 345-67-01",
        call_type=2,
        code="304",
        start=now - 2 * HOUR if call_at is None else call_at,
        contact_id=311,
        deal_id=4521,
    )
    steps.append(
        (
            ("Пропущенный звонок клиента (телефония портала)", "A client's missed call (the portal's telephony)"),
            state.call_end_form("externalCall.demo.1"),
        )
    )
    steps.append(
        (
            ("Чужой запрос без токена портала", "A stranger's request without the portal's token"),
            state.event_form("ONCRMDEALUPDATE", 4521, token="0" * 32),
        )
    )
    return steps
