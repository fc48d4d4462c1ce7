"""Russian wording (see __init__.py)."""

# -- rules: titles, and the message of a finding ------------------------------------------------

RULE_TITLES = {
    "overdue_task": "Просроченная задача",
    "deal_without_task": "Сделка без задачи",
    "stuck_stage": "Сделка застряла на этапе",
    "task_rescheduled_without_contact": "Перенос задачи без контакта",
    "empty_comment": "Пустой комментарий",
    "call_not_logged": "Звонок не зафиксирован",
    "missed_call_not_returned": "Пропущенный звонок без перезвона",
    "unknown_number": "Звонок с неизвестного номера",
    "lead_not_contacted": "Новый лид без контакта",
    "plan_behind_pace": "Отставание от плана",
}

RULE_MESSAGES = {
    "overdue_task": "Задача «{text}» просрочена на {late}",
    "deal_without_task": "У сделки нет запланированной задачи уже {span}",
    "stuck_stage": "Сделка {span} на этапе «{stage}»",
    "task_rescheduled_without_contact": "Срок задачи «{text}» перенесён с {old} на {new} без звонка и комментария",
    "empty_comment": "Пустой комментарий «{text}»: опишите итог контакта",
    "call_not_logged": "Зафиксируйте итоги звонка с {number} от {when} ({talk}): "
    "в карточке нет ни комментария, ни задачи",
    "missed_call_not_returned": "Пропущенный звонок с {number} в {when}: клиенту не перезвонили уже {waited}",
    "unknown_number": "Звонок с номера {number} ({when}), которого нет в CRM: "
    "заведите контакт и сделку, это новый клиент",
    "lead_not_contacted": "Новая сделка от {when}: с клиентом не связались уже {waited}",
    "plan_behind_pace": "{name} отстаёт от плана месяца на {percent} %: {milestone} {fact} из {expected}, "
    "ожидаемых к этому дню (план на месяц {target})",
}

UNTITLED_TASK = "без названия"

# -- what crmwatch writes into the CRM for a finding, by (outbox kind, purpose) -------------------

A_PROBLEM = "нарушение"  # when the finding itself is gone
CRM_TEXTS = {
    ("create_task", "open"): "{message}. Исправьте и отметьте задачу выполненной.",
    ("create_task", "escalate"): "Эскалация ({who}): {message}",
    ("add_note", "open"): "crmwatch: {message} (с {since})",
    ("add_note", "repeat"): "crmwatch, напоминание: {message}",
    ("add_note", "resolve"): "crmwatch: нарушение устранено: {message}",
    ("close_task", "resolve"): "Нарушение устранено: {message}",
}

# -- digests: one task instead of many (a new connection's backlog, or too many at once) -------

DIGEST_BACKLOG = (
    "crmwatch подключён и проверил ваши сделки: нарушений — {total}. Задачу на каждое он не ставил: "
    "разберите их по списку."
)
DIGEST_BACKLOG_TEAM = (
    "crmwatch подключён и проверил сделки отдела: нарушений — {total}. Каждому менеджеру поставлена одна "
    "сводная задача вместо задачи на каждое нарушение."
)
DIGEST_FLOOD = (
    "crmwatch: одна проверка нашла для вас {actions} задач и примечаний (нарушений — {total}). Чтобы не "
    "засыпать вас ими, они собраны в эту задачу."
)
DIGEST_RULE_LINE = "• {title}: {count}"
DIGEST_ESCALATIONS = "Из них эскалаций: {count}."
DIGEST_BY_MANAGER = "По менеджерам: {managers}."
DIGEST_WHERE = "Каждое нарушение видно в карточке сделки (виджет crmwatch) и на дашборде crmwatch."

# -- the page a task's or note's link opens (app/findings/page.py) ---------------------------------

PAGE_LINK = "Подробнее: {url}"
PAGE = {
    "lang": "ru",
    "title": "crmwatch: нарушение",
    "digest_title": "crmwatch: сводка нарушений",
    "status": {
        "pending": "ожидает",
        "open": "открыто",
        "acknowledged": "принято",
        "snoozed": "отложено",
        "resolved": "устранено",
    },
    "since": "С {since}",
    "manager": "ответственный: {name}",
    "open_deal": "Открыть сделку «{deal}» в CRM",
    "gone": "Этого нарушения больше нет.",
    "empty": "Здесь ничего не осталось: всё устранено или принято.",
    "refused": "Ссылка не подходит: возможно, она скопирована не полностью.",
    "read_only": "Страница только для просмотра. Принять или отложить нарушение можно в карточке сделки "
    "(виджет crmwatch).",
}

# -- the call log: a note on the deal for a call the CRM would not file by number -----------------

CALL_INCOMING = "Входящий звонок"
CALL_OUTGOING = "Исходящий звонок"
CALL_TALK = "разговор {duration}"
CALL_NOT_ANSWERED = "без ответа"

# -- the Bitrix24 deal tab -------------------------------------------------------------------------

DEAL_TAB = {
    "lang": "ru",
    "heading": "crmwatch: нарушения по сделке",
    "loading": "Загружаем…",
    "empty": "Всё в порядке: по этой сделке замечаний нет.",
    "acknowledge": "Принято",
    "snooze": "Отложить",
    "snooze_1h": "на 1 час",
    "snooze_tomorrow": "до завтра",
    "snooze_1w": "на неделю",
    "since": "с",
    "unavailable": "crmwatch недоступен. Попробуем ещё раз через несколько секунд.",
    "expired": "Сессия истекла — откройте вкладку заново.",
    "denied": "Нет доступа к crmwatch.",
    "failed": "Не получилось сохранить, попробуйте ещё раз.",
    "user": "Вы вошли как",
    "done_ack": "Принято.",
    "done_snooze": "Отложено {until}.",
    "undo": "Отменить",
    "snoozed_line": "{count} отложено {until}",
    "unsnooze": "Вернуть",
    "severity_critical": "Критично",
    "severity_warning": "Внимание",
    "severity_info": "К сведению",
}

DEAL_TAB_REFUSALS = {
    "bad_request": ("Неполный запрос", "Эту вкладку открывает Битрикс24 из карточки сделки."),
    "not_installed": ("Приложение не установлено", "Этот портал Битрикс24 не подключён к crmwatch."),
    "forged": (
        "Вход не подтверждён",
        "Битрикс24 не подтвердил этот вход. Откройте сделку в Битрикс24 и вкладку crmwatch заново.",
    ),
    "portal_down": ("Битрикс24 не ответил", "Не удалось проверить вход через портал. Обновите вкладку."),
}

# -- the head of sales' dashboard (app/dashboard/pages.py) and its export (app/reports/export.py) ---

DASHBOARD = {
    "lang": "ru",
    "title": "crmwatch: отдел продаж",
    "team": "Команда",
    "period": "Период",
    "today": "Сегодня",
    "yesterday": "Вчера",
    "this_week": "Эта неделя",
    "last_week": "Прошлая неделя",
    "this_month": "Этот месяц",
    "last_month": "Прошлый месяц",
    "custom": "Свой период",
    "apply": "Показать",
    "manager": "Менеджер",
    "calls": "Звонки",
    "talk": "Разговор",
    "successful": "Успешные",
    "incoming": "Вход.",
    "outgoing": "Исх.",
    "missed": "Пропущ.",
    "cards": "Карточки",
    "calls_vs_cards": "Звонки без следа",
    "overdue": "Просроч. задачи",
    "without_task": "Сделки без задачи",
    "ratio": "Задач на сделку",
    "moved": "Перенос без контакта",
    "findings": "Нарушения",
    "total": "Итого",
    "charts": "Динамика",
    "chart_calls": "Звонки и успешные звонки по дням",
    "chart_findings": "Нарушения: открыто и закрыто по дням",
    "chart_rules": "Открытые нарушения по правилам",
    "opened": "Открыто",
    "resolved": "Закрыто",
    "expired_findings": "Истекло без исправления",
    "successful_short": "успешные",
    "funnel": "Воронка",
    "pipeline": "Воронка",
    "stage": "Этап",
    "open_deals": "Открытые сделки",
    "amount": "Сумма",
    "avg_days": "Ср. время, раб. дней",
    "stage_conversion": "Переход дальше",
    "won": "Выиграно",
    "lost": "Проиграно",
    "conversion": "Конверсия",
    "avg_deal": "Средний чек",
    "funnel_days": "Цикл сделки, раб. дней",
    "bottleneck": "Узкое место",
    "new_clients": "Новые клиенты",
    "returning_clients": "Повторные клиенты",
    "export": "Скачать",
    "deals": "Сделки",
    "deal": "Сделка",
    "open_in_crm": "Открыть в CRM",
    "close": "Закрыть",
    "since": "с",
    "loading": "Загружаем…",
    "updated": "Обновлено",
    "error": "Не удалось загрузить данные.",
    "expired": "Сессия истекла — откройте дашборд заново.",
    "no_data": "Нет данных за период.",
    "flag_calls": "звонков больше, чем изменённых карточек",
    "sec": "с",
    "min": "мин",
    "h": "ч",
    "self_view": "Вы видите только свои показатели.",
    "team_view": "Вся команда.",
    "lag_warning": (
        "Данные отстают от CRM на {minutes} мин — изменения ещё применяются, "
        "показатели и нарушения могут быть неполными."
    ),
    # Plan and pace, ABC/XYZ (issue 16)
    "plan": "План и темп",
    "milestone_col": "Показатель",
    "month": "Месяц",
    "target": "Цель на месяц",
    "per_week": "В неделю",
    "fact": "Факт",
    "expected": "Должно быть к сегодня",
    "pace": "Темп",
    "behind": "Отстаёт на",
    "on_pace": "В графике",
    "m_revenue": "Выручка",
    "m_won_deals": "Выигранные сделки",
    "m_proposal_sent": "КП отправлено",
    "m_meeting_held": "Встречи проведены",
    "m_first_contact": "Первые контакты",
    "working_days": "Прошло рабочих дней: {done} из {total}",
    "no_plan": "На этот месяц план не задан.",
    "conv_team": "цели по конверсии команды: своей истории мало",
    "abc": "ABC/XYZ клиентов",
    "months_3": "3 месяца",
    "months_6": "6 месяцев",
    "months_12": "12 месяцев",
    "by_contact": "По контактам",
    "by_company": "По компаниям",
    "whole_team": "Вся команда",
    "clients": "Клиентов",
    "movement": "Перешли в другую группу",
    "client": "Клиент",
    "was": "Было",
    "now": "Стало",
    "revenue": "Выручка",
    "new_lost": "Новых клиентов: {new}, ушедших: {lost}",
    "no_movement": "Никто не сменил группу.",
    "abc_hint": "A — клиенты, дающие 80 % выручки, B — следующие 15 %, C — остальные 5 %; "
    "X — стабильные покупки по месяцам, Y — колеблющиеся, Z — нерегулярные или разовые.",
    "payments": "Ожидаемые оплаты",
    "pay_overdue": "Просрочено",
    "pay_today": "Сегодня",
    "pay_tomorrow": "Завтра",
    "pay_week": "Ближайшие 7 дней",
    "pay_received": "Получено сегодня",
    "pay_expected_on": "Ожидалась",
    "pay_days_overdue": "Дней просрочки",
    "pay_reason": "Основание",
    "pay_won": "сделка выиграна",
    "pay_paid": "отмечена оплата",
    "pay_none": "Ожидаемых оплат нет.",
    "pay_setup": "Поле с датой оплаты не задано: администратор указывает его "
    "в PUT /api/accounts/{id}/payments/settings.",
    "pay_hint": "Сумма — из поля суммы оплаты, иначе бюджет сделки. Просрочено — дата прошла, сделка не выиграна.",
}

DASHBOARD_REFUSALS = {
    "unknown": ("Ссылка недействительна", "Такой ссылки на дашборд нет. Попросите новую у руководителя."),
    "expired": ("Срок ссылки истёк", "Эта ссылка на дашборд больше не действует. Попросите новую."),
    "revoked": ("Ссылка отозвана", "Доступ по этой ссылке закрыт. Попросите новую у руководителя."),
    "bad_request": ("Неполный запрос", "Эту страницу открывает Битрикс24 из меню приложения."),
    "not_installed": ("Приложение не установлено", "Этот портал Битрикс24 не подключён к crmwatch."),
    "forged": ("Вход не подтверждён", "Битрикс24 не подтвердил этот вход. Откройте приложение заново."),
    "portal_down": ("Битрикс24 не ответил", "Не удалось проверить вход через портал. Обновите страницу."),
}

# The export's column headings, by the report's field names, and its sheets.
REPORT_COLUMNS = {
    "name": "Менеджер",
    "manager_id": "ID в CRM",
    "calls": "Звонки",
    "talk_seconds": "Разговор, с",
    "successful_calls": "Успешные (≥ 40 с)",
    "incoming": "Входящие",
    "outgoing": "Исходящие",
    "missed": "Пропущенные",
    "cards_changed": "Изменено карточек",
    "calls_not_written": "Звонки без следа в карточке",
    "overdue_tasks": "Просроченные задачи",
    "deals_without_task": "Сделки без задачи",
    "tasks_per_deal": "Задач на сделку",
    "tasks_moved_without_contact": "Перенос задач без контакта",
    "first_contact_median_minutes": "Первый контакт с лидом, медиана, раб. мин",
    "open_findings_total": "Открытые нарушения",
    "day": "День",
}
REPORT_TOTAL = "Итого"
REPORT_SHEETS = {"managers": "Менеджеры", "per_day": "По дням"}

# The morning digest (app/digest): the preview page, Telegram, the CRM task.
DIGEST = {
    "title": "Утренняя сводка — «{account}», {day}",
    "quoted": "«{name}»",
    "fact": "Факт за {day}",
    "manager": "Менеджер",
    "calls": "Звонки",
    "successful_calls": "Успешные (≥ 40 с)",
    "cards_changed": "Изменено карточек",
    "won": "Выиграно",
    "lost": "Проиграно",
    "findings_opened": "Нарушений открыто",
    "findings_resolved": "Нарушений закрыто",
    "today": "План на сегодня",
    "tasks_due": "Задачи на сегодня",
    "meetings": "Встречи",
    "payments": "Ожидаемые оплаты",
    "pace": "Темп к плану месяца {month}",
    "pace_line": "{name}: {milestone} {fact} из {target} (ожидалось {expected})",
    "behind": "отстаёт на {percent} %",
    "on_track": "в графике",
    "no_plan": "Плана на месяц нет.",
    "critical": "Самые старые критичные нарушения",
    "no_critical": "Открытых критичных нарушений нет.",
    "since": "с {at}",
    "nothing": "Нет данных.",
    "resent": "♻️ Повторная отправка: прошлая попытка могла дойти — тогда эта сводка её копия.",
    "total": "Итого",
    "milestones": {
        "revenue": "выручка",
        "won_deals": "выигранные сделки",
        "first_contact": "первые контакты",
        "meeting_held": "встречи",
        "proposal_sent": "КП",
    },
}

# What the plan_behind_pace rule names a figure of the plan.
PACE_FIGURES = {
    "revenue": "выручка",
    "won_deals": "выигранные сделки",
    "first_contact": "первые контакты",
    "meeting_held": "встречи",
    "proposal_sent": "КП",
}
