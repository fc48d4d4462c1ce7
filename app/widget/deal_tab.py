"""The Bitrix24 deal tab's HTML: a page crmwatch renders itself, with no build step and no CDN."""

from __future__ import annotations

import json
from html import escape

from fastapi.responses import HTMLResponse

from app import wording
from integrations.http import origin

# The page's words: app/wording (ru.py, en.py), DEAL_TAB and DEAL_TAB_REFUSALS.
STRINGS = {lang: words.DEAL_TAB for lang, words in wording.LANGUAGES.items()}
REFUSALS = {lang: words.DEAL_TAB_REFUSALS for lang, words in wording.LANGUAGES.items()}

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
    return {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        f"connect-src 'self'; img-src 'self' data:; frame-ancestors {ancestors}",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }


def page(lang: str, token: str, deal_id: str, user_name: str, portal: str) -> HTMLResponse:
    t = STRINGS[lang]
    strings = json.dumps(t, ensure_ascii=False).replace("</", "<\\/")
    body = _HEAD.format(lang=lang) + (
        f"<h1>{escape(t['heading'])}</h1>\n"
        f'<p class="cw-user">{escape(t["user"])} {escape(user_name)}</p>\n'
        f'<div id="crmwatch-card" data-deal="{escape(deal_id)}" data-token="{escape(token)}" '
        f'data-api="/widget/bitrix24"></div>\n'
        f'<script type="application/json" id="crmwatch-strings">{strings}</script>\n'
        '<script src="/widget/bitrix24/card-core.js"></script>\n'
        '<script src="/widget/bitrix24/deal-tab.js"></script>\n'
        "</body></html>\n"
    )
    return HTMLResponse(body, headers=_headers(portal))


def refusal(lang: str, reason: str, status_code: int, portal: str | None = None) -> HTMLResponse:
    title, text = REFUSALS[lang][reason]
    body = _HEAD.format(lang=lang) + (
        f'<div class="cw-refusal" data-crmwatch-refusal="{escape(reason)}"><h1>{escape(title)}</h1>'
        f"<p>{escape(text)}</p></div>\n</body></html>\n"
    )
    return HTMLResponse(body, status_code=status_code, headers=_headers(portal))
