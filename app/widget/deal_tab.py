"""The Bitrix24 deal tab's HTML: a page crmwatch renders itself, with no build step and no CDN."""

from __future__ import annotations

import json
from html import escape

from fastapi.responses import HTMLResponse

from .amocrm_token import origin

STRINGS = {
    "ru": {
        "lang": "ru", "heading": "crmwatch: нарушения по сделке", "loading": "Загружаем…",
        "empty": "Всё в порядке: по этой сделке замечаний нет.", "acknowledge": "Принято",
        "snooze": "Отложить", "snooze_1h": "на 1 час", "snooze_tomorrow": "до завтра", "snooze_1w": "на неделю",
        "since": "с", "unavailable": "crmwatch недоступен. Попробуем ещё раз через несколько секунд.",
        "expired": "Сессия истекла — откройте вкладку заново.", "denied": "Нет доступа к crmwatch.",
        "failed": "Не получилось сохранить, попробуйте ещё раз.", "user": "Вы вошли как",
        "done_ack": "Принято.", "done_snooze": "Отложено {until}.", "undo": "Отменить",
        "snoozed_line": "{count} отложено {until}", "unsnooze": "Вернуть", "severity_critical": "Критично",
        "severity_warning": "Внимание", "severity_info": "К сведению",
    },
    "en": {
        "lang": "en", "heading": "crmwatch: issues on this deal", "loading": "Loading…",
        "empty": "All is in order: nothing to fix on this deal.", "acknowledge": "Acknowledge",
        "snooze": "Snooze", "snooze_1h": "1 hour", "snooze_tomorrow": "until tomorrow", "snooze_1w": "1 week",
        "since": "since", "unavailable": "crmwatch is unavailable. Retrying in a few seconds.",
        "expired": "The session has expired: reopen the tab.", "denied": "Access to crmwatch was refused.",
        "failed": "Could not save that, please try again.", "user": "Signed in as",
        "done_ack": "Acknowledged.", "done_snooze": "Snoozed {until}.", "undo": "Undo",
        "snoozed_line": "{count} snoozed {until}", "unsnooze": "Bring back", "severity_critical": "Critical",
        "severity_warning": "Warning", "severity_info": "Info",
    },
}

REFUSALS = {
    "ru": {
        "bad_request": ("Неполный запрос", "Эту вкладку открывает Битрикс24 из карточки сделки."),
        "not_installed": ("Приложение не установлено", "Этот портал Битрикс24 не подключён к crmwatch."),
        "forged": ("Вход не подтверждён",
                   "Битрикс24 не подтвердил этот вход. Откройте сделку в Битрикс24 и вкладку crmwatch заново."),
        "portal_down": ("Битрикс24 не ответил", "Не удалось проверить вход через портал. Обновите вкладку."),
    },
    "en": {
        "bad_request": ("Incomplete request", "Bitrix24 opens this tab from a deal card."),
        "not_installed": ("The app is not installed", "This Bitrix24 portal is not connected to crmwatch."),
        "forged": ("Sign-in not confirmed",
                   "Bitrix24 did not confirm this sign-in. Open the deal in Bitrix24 and this tab again."),
        "portal_down": ("Bitrix24 did not answer", "The sign-in could not be checked with the portal. Reload."),
    },
}

_HEAD = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crmwatch</title>
<style>
body{{margin:0;padding:12px;background:#fff;
  font:13px/1.35 -apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2d3d}}
h1{{font-size:15px;margin:0 0 8px}} .cw-user{{color:#6b7a89;font-size:12px;margin:0 0 10px}}
.cw-refusal{{background:#fdecea;color:#8a1c12;padding:12px;border-radius:4px;max-width:560px}}
.cw-refusal h1{{color:#8a1c12}}
</style></head><body>
"""


def _headers(portal: str | None) -> dict[str, str]:
    # Only the portal may frame the tab; scripts only from crmwatch itself (no CDN, no inline code).
    ancestors = origin(portal) if portal else "'none'"
    return {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                                       f"connect-src 'self'; img-src 'self' data:; frame-ancestors {ancestors}",
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def page(lang: str, token: str, deal_id: str, user_name: str, portal: str) -> HTMLResponse:
    t = STRINGS[lang]
    strings = json.dumps(t, ensure_ascii=False).replace("</", "<\\/")
    body = _HEAD.format(lang=lang) + (
        f'<h1>{escape(t["heading"])}</h1>\n'
        f'<p class="cw-user">{escape(t["user"])} {escape(user_name)}</p>\n'
        f'<div id="crmwatch-card" data-deal="{escape(deal_id)}" data-token="{escape(token)}" '
        f'data-api="/widget/bitrix24"></div>\n'
        f'<script type="application/json" id="crmwatch-strings">{strings}</script>\n'
        '<script src="/widget/bitrix24/card-core.js"></script>\n'
        '<script src="/widget/bitrix24/deal-tab.js"></script>\n'
        "</body></html>\n")
    return HTMLResponse(body, headers=_headers(portal))


def refusal(lang: str, reason: str, status_code: int, portal: str | None = None) -> HTMLResponse:
    title, text = REFUSALS[lang][reason]
    body = _HEAD.format(lang=lang) + (
        f'<div class="cw-refusal" data-crmwatch-refusal="{escape(reason)}"><h1>{escape(title)}</h1>'
        f"<p>{escape(text)}</p></div>\n</body></html>\n")
    return HTMLResponse(body, status_code=status_code, headers=_headers(portal))
