"""The dashboard's HTML: one server-rendered shell, the figures drawn by static/dashboard.js from the
JSON routes. No build step and no CDN: the chart library (plotly.js) is served from the Python
package it ships in."""

from __future__ import annotations

import json
from html import escape

from fastapi.responses import HTMLResponse

from app.rules.registry import RULES

STRINGS = {
    "ru": {
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
    },
    "en": {
        "lang": "en",
        "title": "crmwatch: sales team",
        "team": "Team",
        "period": "Period",
        "today": "Today",
        "yesterday": "Yesterday",
        "this_week": "This week",
        "last_week": "Last week",
        "this_month": "This month",
        "last_month": "Last month",
        "custom": "Custom",
        "apply": "Show",
        "manager": "Manager",
        "calls": "Calls",
        "talk": "Talk time",
        "successful": "Successful",
        "incoming": "In",
        "outgoing": "Out",
        "missed": "Missed",
        "cards": "Cards",
        "calls_vs_cards": "Calls not written",
        "overdue": "Overdue tasks",
        "without_task": "Deals w/o task",
        "ratio": "Tasks per deal",
        "moved": "Moved w/o contact",
        "findings": "Findings",
        "total": "Total",
        "charts": "Over time",
        "chart_calls": "Calls and successful calls per day",
        "chart_findings": "Findings opened and resolved per day",
        "chart_rules": "Open findings by rule",
        "opened": "Opened",
        "resolved": "Resolved",
        "successful_short": "successful",
        "funnel": "Funnel",
        "pipeline": "Pipeline",
        "stage": "Stage",
        "open_deals": "Open deals",
        "amount": "Amount",
        "avg_days": "Avg working days",
        "stage_conversion": "Moved on",
        "won": "Won",
        "lost": "Lost",
        "conversion": "Conversion",
        "avg_deal": "Avg deal size",
        "funnel_days": "Deal cycle, working days",
        "bottleneck": "Bottleneck",
        "new_clients": "New clients",
        "returning_clients": "Returning clients",
        "export": "Download",
        "deals": "Deals",
        "deal": "Deal",
        "open_in_crm": "Open in the CRM",
        "close": "Close",
        "since": "since",
        "loading": "Loading…",
        "updated": "Updated",
        "error": "Could not load the data.",
        "expired": "The session has expired: open the dashboard again.",
        "no_data": "No data for the period.",
        "flag_calls": "more calls than cards changed",
        "sec": "s",
        "min": "min",
        "h": "h",
        "self_view": "You see your own figures only.",
        "team_view": "The whole team.",
    },
}

REFUSALS = {
    "ru": {
        "unknown": ("Ссылка недействительна", "Такой ссылки на дашборд нет. Попросите новую у руководителя."),
        "expired": ("Срок ссылки истёк", "Эта ссылка на дашборд больше не действует. Попросите новую."),
        "revoked": ("Ссылка отозвана", "Доступ по этой ссылке закрыт. Попросите новую у руководителя."),
        "bad_request": ("Неполный запрос", "Эту страницу открывает Битрикс24 из меню приложения."),
        "not_installed": ("Приложение не установлено", "Этот портал Битрикс24 не подключён к crmwatch."),
        "forged": ("Вход не подтверждён", "Битрикс24 не подтвердил этот вход. Откройте приложение заново."),
        "portal_down": ("Битрикс24 не ответил", "Не удалось проверить вход через портал. Обновите страницу."),
    },
    "en": {
        "unknown": ("Invalid link", "There is no such dashboard link. Ask your head of sales for a new one."),
        "expired": ("The link has expired", "This dashboard link no longer works. Ask for a new one."),
        "revoked": ("The link was revoked", "Access through this link was closed. Ask for a new one."),
        "bad_request": ("Incomplete request", "Bitrix24 opens this page from the app's menu."),
        "not_installed": ("The app is not installed", "This Bitrix24 portal is not connected to crmwatch."),
        "forged": ("Sign-in not confirmed", "Bitrix24 did not confirm this sign-in. Open the app again."),
        "portal_down": ("Bitrix24 did not answer", "The sign-in could not be checked with the portal. Reload."),
    },
}

_HEAD = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head><body>
"""


def headers(frame_ancestors: list[str]) -> dict[str, str]:
    # Scripts only from crmwatch itself; framing only by the CRM pages that open it.
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"connect-src 'self'; img-src 'self' data: blob:; frame-ancestors {ancestors}",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }


def strings(lang: str) -> dict[str, str]:
    return {**STRINGS[lang], "rules": {name: rule.title[lang] for name, rule in RULES.items()}}


def page(lang: str, auth: str | None, frame_ancestors: list[str]) -> HTMLResponse:
    """The dashboard shell. `auth` is the Authorization value for the data routes; None means the
    page takes a session from its URL fragment (#s=…), where the amoCRM widget puts it."""
    t = STRINGS[lang]
    blob = json.dumps(strings(lang), ensure_ascii=False).replace("</", "<\\/")
    body = _HEAD.format(lang=lang, title=escape(t["title"])) + (
        f'<main id="crmwatch-dashboard" data-auth="{escape(auth or "")}"></main>\n'
        f'<script type="application/json" id="crmwatch-strings">{blob}</script>\n'
        '<script src="/dashboard/static/plotly.min.js"></script>\n'
        '<script src="/dashboard/static/dashboard.js"></script>\n'
        "</body></html>\n"
    )
    return HTMLResponse(body, headers=headers(frame_ancestors))


def refusal(lang: str, reason: str, status_code: int, frame_ancestors: list[str] | None = None) -> HTMLResponse:
    title, text = REFUSALS[lang][reason]
    body = _HEAD.format(lang=lang, title=escape(title)) + (
        f'<div class="cw-refusal" data-crmwatch-refusal="{escape(reason)}"><h1>{escape(title)}</h1>'
        f"<p>{escape(text)}</p></div>\n</body></html>\n"
    )
    return HTMLResponse(body, status_code=status_code, headers=headers(frame_ancestors or []))
