"""What `crmwatch demo` prints, in Russian (the default, like the product) and English.

Only the demo's own lines live here; findings and CRM texts come from crmwatch itself, in the
account's language or the one asked for.
"""

from __future__ import annotations

from typing import Any

TEXT: dict[str, dict[str, str]] = {
    "ru": {
        "servers": "Запущено на этом компьютере:",
        "crmwatch": "  crmwatch            {url}   (документация API: {url}/docs; токен администратора: {token})",
        "amo_emulator": "  эмулятор amoCRM     {url}   (токен: {token})",
        "b24_emulator": "  эмулятор Битрикс24  {url}   (входящий вебхук /rest/{user}/{secret}/)",
        "amo_account": "\namoCRM: аккаунт «{name}» подключён через API (№{id}).",
        "calendar": "  Для демонстрации: календарь аккаунта круглосуточный и эскалация просроченной задачи через "
        "{seconds} с, руководитель отдела продаж — {head}: так эскалация видна в любое время суток.",
        "backfill": "  Первичная загрузка: {state}, прочитано {counts}.",
        "backlog_quiet": "  Нарушения, которые уже были до подключения, crmwatch показывает у себя и в виджете, "
        "а в CRM пишет сводкой: одна задача каждому менеджеру и одна руководителю (настройка announce_backlog), "
        "а не задачу и примечание на каждое.",
        "day": "\nРабочий день команды, как его присылает amoCRM (вебхуки):",
        "step": "  • {title}: {result}",
        "accepted": "принят",
        "repeat": "принят, повтор ничего не меняет",
        "refused": "отклонён ({code})",
        "pbx": "Телефония (Mango Office) подключена, события звонков идут на {hook}summary:",
        "inbox": "  Входящие: применено {done}, ждут {pending}, с ошибкой {failed}.",
        "mirror": "  crmwatch знает: открытых сделок {deals_open} (закрытых {deals_closed}), открытых задач "
        "{tasks_open} (просрочено {tasks_overdue}), сделок без задачи {deals_without_open_task}, "
        "примечаний {notes}, контактов {contacts}, пользователей {users}.",
        "sweep": "\nПроверка правил: открыто новых нарушений {opened}, устранено {resolved}; открыто сейчас {open}.",
        "findings": "Открытые нарушения ({total}):",
        "finding": "  • {title} — {where}, {manager}: {message}",
        "suppressed_mark": "    (подавлено: пока по этой сделке открыто «{by}», это нарушение ждёт молча и не пишет "
        "в CRM)",
        "suppressed_note": "  Подавленных {count}: они видны в списке, но задач и примечаний по ним нет, пока открыто "
        "нарушение, которое их объясняет (настройка suppress).",
        "backlog_note": "  Было до подключения: {count}; в CRM они попали в сводки, а не по одному.",
        "deal": "сделка «{name}» ({amount})",
        "number": "номер {number}",
        "written": "\nЗаписано в amoCRM: задач {tasks}, примечаний {notes}.",
        "written_backlog": "  Сводок при подключении: {digests} (по одной каждому менеджеру с его нарушениями по "
        "правилам и одна руководителю); задач и примечаний на каждое нарушение, бывшее до подключения, нет.",
        "written_open": "  По {count} нарушениям, появившимся после подключения: задача и примечание ответственному "
        "менеджеру.",
        "written_closed": "  По нарушениям, устранённым за демо-день (их задачи crmwatch уже закрыл): задач {count}, "
        "примечаний {notes}.",
        "written_no_card": "  Нарушений без сделки (звонок с неизвестного номера): {count}; писать их некуда, "
        "они видны в списке.",
        "written_escalated": "  Эскалаций: {count} (задача руководителю).",
        "example_summary": "  сводка для {owner}:",
        "example_summary_line": "    {text}",
        "example_task": "  задача для {owner}, {where}: {text}",
        "example_note": "  примечание, {where}: {text}",
        "escalation": "  эскалация: задача для {owner}, {where}: {text}",
        "no_escalation": "  Эскалация не пришла вовремя (см. журнал).",
        "widget": "\nВиджет в карточке сделки: {url}   (предупреждений в панели: {shown}; нажмите «Принято» "
        "или «Отложить»)",
        "b24_account": "\nБитрикс24: портал «{name}» подключён входящим вебхуком (№{id}).",
        "b24_day": "События портала:",
        "b24_findings": "Открытые нарушения на портале ({total}):",
        "b24_written": "Записано в портал: сводных задач {summaries} (tasks.task.add), дел {todos} "
        "(crm.activity.todo.add), комментариев {comments}.",
        "b24_written_open": "  По нарушениям после подключения: {open}; закрыто, потому что нарушение устранено: "
        "{closed}; были до подключения и вошли в сводки: {backlog}.",
        "b24_example": "  дело, {where}: {text}",
        "b24_refused": "Запросов, отклонённых порталом из-за лимита: {count}.",
        "history": "\nИстория для дашборда ({crm}): четыре недели звонков ({calls}), сделок ({deals}), переходов по "
        "этапам ({stage_moves}), нарушений открытых и устранённых ({findings}).",
        "crm_amocrm": "amoCRM",
        "crm_bitrix24": "Битрикс24",
        "look": "\nОткройте в браузере:",
        "look_card": "  карточка сделки amoCRM с виджетом crmwatch: {url}",
        "look_dashboard_amo": "  дашборд отдела продаж, amoCRM (ссылка только для просмотра): {url}",
        "look_dashboard_widget": "  тот же дашборд внутри amoCRM, страница виджета: {url}",
        "look_dashboard_b24": "  дашборд отдела продаж, Битрикс24 (ссылка только для просмотра): {url}",
        "look_home": "  crmwatch: {url}/  (документация API: {url}/docs, кнопка Authorize, токен {token})",
        "digest": "\nУтренняя сводка руководителю отправлена в Telegram (эмулятор, чат {chat}); "
        "предпросмотр HTML (API администратора): {url}",
        "running": "\nРаботает; Ctrl-C останавливает демо.",
        "money": "{amount} ₽",
    },
    "en": {
        "servers": "Running on this machine:",
        "crmwatch": "  crmwatch            {url}   (API docs: {url}/docs; admin token: {token})",
        "amo_emulator": "  amoCRM emulator     {url}   (token: {token})",
        "b24_emulator": "  Bitrix24 emulator   {url}   (inbound webhook /rest/{user}/{secret}/)",
        "amo_account": "\namoCRM: account “{name}” connected through the API (no. {id}).",
        "calendar": "  For the demo: the account's calendar runs round the clock and an overdue task escalates after "
        "{seconds} s to the head of sales, {head}, so an escalation shows at any hour.",
        "backfill": "  First load: {state}; read: {counts}.",
        "backlog_quiet": "  Problems that were there before the connection show in crmwatch and in the widget, and go "
        "into the CRM as summaries: one task per manager and one for the head of sales (the announce_backlog "
        "setting), not a task and a note each.",
        "day": "\nThe team's day, as amoCRM sends it (webhooks):",
        "step": "  • {title}: {result}",
        "accepted": "accepted",
        "repeat": "accepted, the repeat changes nothing",
        "refused": "refused ({code})",
        "pbx": "Telephony (Mango Office) connected; call events go to {hook}summary:",
        "inbox": "  Inbox: {done} applied, {pending} waiting, {failed} failed.",
        "mirror": "  crmwatch knows: {deals_open} open deals ({deals_closed} closed), {tasks_open} open tasks "
        "({tasks_overdue} overdue), {deals_without_open_task} deals without a task, {notes} notes, "
        "{contacts} contacts, {users} users.",
        "sweep": "\nRules checked: findings opened {opened}, resolved {resolved}; open now {open}.",
        "findings": "Open findings ({total}):",
        "finding": "  • {title} — {where}, {manager}: {message}",
        "suppressed_mark": "    (suppressed: while “{by}” is open on this deal, this finding waits quietly and writes "
        "nothing into the CRM)",
        "suppressed_note": "  {count} suppressed: listed, but no task or note is written for them while the finding "
        "that explains them is open (the suppress setting).",
        "backlog_note": "  There before the connection: {count}; they reached the CRM in summaries, not one by one.",
        "deal": "deal “{name}” ({amount})",
        "number": "number {number}",
        "written": "\nWritten into amoCRM: {tasks} tasks, {notes} notes.",
        "written_backlog": "  Summaries at connection: {digests} (one per manager with their problems by rule, and one "
        "for the head of sales); no task or note for each problem that was there before.",
        "written_open": "  For the {count} findings that opened after the connection: a task and a note for the "
        "manager in charge.",
        "written_closed": "  For findings that resolved during the demo day (crmwatch closed their tasks): {count} "
        "tasks, {notes} notes.",
        "written_no_card": "  Findings without a deal (a call from an unknown number): {count}; there is no card to "
        "write them on, the list shows them.",
        "written_escalated": "  Escalations: {count} (a task for the head of sales).",
        "example_summary": "  summary for {owner}:",
        "example_summary_line": "    “{text}”",  # the CRM's text, in the account's language
        "example_task": "  task for {owner}, {where}: {text}",
        "example_note": "  note, {where}: {text}",
        "escalation": "  escalation: task for {owner}, {where}: {text}",
        "no_escalation": "  The escalation did not arrive in time (see the log).",
        "widget": "\nWidget in the deal card: {url}   ({shown} warnings in the panel; press “Принято” or “Отложить”)",
        "b24_account": "\nBitrix24: portal “{name}” connected by its inbound webhook (no. {id}).",
        "b24_day": "Portal events:",
        "b24_findings": "Open findings on the portal ({total}):",
        "b24_written": "Written into the portal: {summaries} summary tasks (tasks.task.add), {todos} activities "
        "(crm.activity.todo.add), {comments} comments.",
        "b24_written_open": "  For findings after the connection: {open}; closed because the finding resolved: "
        "{closed}; there before the connection and summarized: {backlog}.",
        "b24_example": "  activity, {where}: {text}",
        "b24_refused": "Portal requests refused for the rate limit: {count}.",
        "history": "\nHistory for the dashboard ({crm}): four weeks of calls ({calls}), deals ({deals}), stage "
        "moves ({stage_moves}), findings opened and resolved ({findings}).",
        "crm_amocrm": "amoCRM",
        "crm_bitrix24": "Bitrix24",
        "look": "\nOpen in a browser:",
        "look_card": "  the amoCRM deal card with the crmwatch widget: {url}",
        "look_dashboard_amo": "  the sales team dashboard, amoCRM (a read-only link): {url}",
        "look_dashboard_widget": "  the same dashboard inside amoCRM, the widget's page: {url}",
        "look_dashboard_b24": "  the sales team dashboard, Bitrix24 (a read-only link): {url}",
        "look_home": "  crmwatch: {url}/  (API docs: {url}/docs, button Authorize, token {token})",
        "digest": "\nThe morning digest for the head of sales went to Telegram (the emulator, chat {chat}); "
        "HTML preview (admin API): {url}",
        "running": "\nRunning; Ctrl-C stops the demo.",
        "money": "RUB {amount}",
    },
}

# The backfill's sections, as a person names them.
SECTIONS = {
    "ru": {
        "users": "пользователей",
        "pipelines": "воронок",
        "contacts": "контактов",
        "companies": "компаний",
        "deals": "сделок",
        "leads": "сделок",
        "tasks": "задач",
        "notes": "примечаний",
        "calls": "звонков",
        "activities": "дел",
        "comments": "комментариев",
        "stage_history": "смен этапа",
        "stage_events": "смен этапа",
        "events": "событий",
    },
    "en": {"stage_history": "stage changes", "stage_events": "stage changes"},
}


def number(value: float, lang: str) -> str:
    """Thousands grouped as people write them: 1 250 000 in Russian, 1,250,000 in English."""
    text = f"{value:,.0f}"
    return text.replace(",", "\u00a0") if lang == "ru" else text


def money(value: float | None, lang: str) -> str:
    return TEXT[lang]["money"].format(amount=number(value or 0, lang))


def counts(values: dict[str, Any], lang: str) -> str:
    names = SECTIONS[lang]
    parts = [f"{names.get(k, k.replace('_', ' '))} {number(v, lang)}" for k, v in values.items()]
    return ", ".join(parts) or "—"
