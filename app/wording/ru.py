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

# -- the call log: a note on the deal for a call the CRM would not file by number -----------------

CALL_INCOMING = "Входящий звонок"
CALL_OUTGOING = "Исходящий звонок"
CALL_TALK = "разговор {duration}"
CALL_NOT_ANSWERED = "без ответа"

# -- the Bitrix24 deal tab -------------------------------------------------------------------------

DEAL_TAB = {
    "lang": "ru", "heading": "crmwatch: нарушения по сделке", "loading": "Загружаем…",
    "empty": "Всё в порядке: по этой сделке замечаний нет.", "acknowledge": "Принято",
    "snooze": "Отложить", "snooze_1h": "на 1 час", "snooze_tomorrow": "до завтра", "snooze_1w": "на неделю",
    "since": "с", "unavailable": "crmwatch недоступен. Попробуем ещё раз через несколько секунд.",
    "expired": "Сессия истекла — откройте вкладку заново.", "denied": "Нет доступа к crmwatch.",
    "failed": "Не получилось сохранить, попробуйте ещё раз.", "user": "Вы вошли как",
    "done_ack": "Принято.", "done_snooze": "Отложено {until}.", "undo": "Отменить",
    "snoozed_line": "{count} отложено {until}", "unsnooze": "Вернуть", "severity_critical": "Критично",
    "severity_warning": "Внимание", "severity_info": "К сведению",
}

DEAL_TAB_REFUSALS = {
    "bad_request": ("Неполный запрос", "Эту вкладку открывает Битрикс24 из карточки сделки."),
    "not_installed": ("Приложение не установлено", "Этот портал Битрикс24 не подключён к crmwatch."),
    "forged": ("Вход не подтверждён",
               "Битрикс24 не подтвердил этот вход. Откройте сделку в Битрикс24 и вкладку crmwatch заново."),
    "portal_down": ("Битрикс24 не ответил", "Не удалось проверить вход через портал. Обновите вкладку."),
}
