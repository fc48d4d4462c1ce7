"""The dashboard's HTML: one server-rendered shell, the figures drawn by static/dashboard.js from the
JSON routes. No build step and no CDN: the chart library (plotly.js) is served from the Python
package it ships in."""

from __future__ import annotations

import json
from html import escape

from fastapi.responses import HTMLResponse

from app import wording
from app.rules.registry import RULES

# The page's words: app/wording (ru.py, en.py), DASHBOARD and DASHBOARD_REFUSALS.
STRINGS = {lang: words.DASHBOARD for lang, words in wording.LANGUAGES.items()}
REFUSALS = {lang: words.DASHBOARD_REFUSALS for lang, words in wording.LANGUAGES.items()}

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
