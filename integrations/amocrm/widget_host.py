"""A stand-in for amoCRM's lead card that hosts the real widget, for the demo and the browser tests.

It plays amoCRM's side of the widget SDK: a page with the card's right panel, the globals the
SDK gives a widget (`define`, `AMOCRM`, the widget object with `render_template`, `i18n`,
`get_settings`, `system`, `$authorizedAjax`), and the disposable tokens amoCRM signs with the
integration's secret (HS256, 30 minutes; claims as amoCRM documents them). The widget's
script.js is served from the built archive unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse

TOKEN_LIFETIME = 30 * 60
SDK_JS = Path(__file__).parent / "widget_host_sdk.js"


def mint_token(
    secret: str,
    *,
    base_url: str,
    audience: str,
    account_id: int,
    subdomain: str,
    user_id: int,
    lifetime: int = TOKEN_LIFETIME,
    jti: str | None = None,
    now: int | None = None,
    client_uuid: str = "00000000-0000-4000-8000-000000000000",
    is_admin: bool = False,
) -> str:
    """A disposable token exactly as amoCRM issues it for `$authorizedAjax`."""
    now = int(time.time()) if now is None else now
    claims = {
        "iss": base_url.rstrip("/"),
        "aud": audience,
        "jti": jti or str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "account_id": account_id,
        "subdomain": subdomain,
        "client_uuid": client_uuid,
        "user_id": user_id,
        "is_admin": is_admin,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class CardHost:
    widget_zip: Path
    secret: str
    base_url: str  # this host's own origin: the "amoCRM account address"
    audience: str
    account_id: int
    subdomain: str
    user_id: int
    crmwatch_url: str
    lang: str = "ru"
    # amoCRM's is_admin claim in the tokens: the account's administrator.
    is_admin: bool = False
    # "good" | "bad_signature" | "expired": what the next tokens look like (tests flip it).
    token_mode: str = "good"
    tokens_issued: list[str] = field(default_factory=list)

    def token(self) -> str:
        now = int(time.time())
        if self.token_mode == "expired":
            tok = mint_token(
                self.secret,
                base_url=self.base_url,
                audience=self.audience,
                account_id=self.account_id,
                subdomain=self.subdomain,
                user_id=self.user_id,
                now=now - 2 * TOKEN_LIFETIME,
            )
        else:
            secret = self.secret if self.token_mode == "good" else self.secret + "-not-the-secret"
            tok = mint_token(
                secret,
                base_url=self.base_url,
                audience=self.audience,
                account_id=self.account_id,
                subdomain=self.subdomain,
                user_id=self.user_id,
                now=now,
                is_admin=self.is_admin,
            )
        self.tokens_issued.append(tok)
        return tok


_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Сделка #{lead_id} — amoCRM (стенд)</title>
<style>
body{{margin:0;font:14px Arial,sans-serif;background:#f5f5f5;display:flex}}
.card-main{{flex:1;padding:24px}} .card-main h1{{font-size:20px}}
#card_widgets_panel{{width:280px;min-height:100vh;background:#fff;border-left:1px solid #dbdedf;padding:8px}}
.card-widgets__widget{{margin-bottom:12px}} .card-widgets__widget__caption{{font-weight:bold;padding:6px 0}}
</style></head>
<body>
<div class="card-main"><h1>Сделка #{lead_id}</h1><p>Стенд карточки amoCRM: справа — виджет crmwatch.</p></div>
<div id="card_widgets_panel" class="card-widgets"></div>
<script type="application/json" id="card-host">{config}</script>
<script src="/card/sdk.js"></script>
<script src="/widget/script.js"></script>
</body></html>
"""


_SETTINGS_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>crmwatch — amoCRM (стенд)</title>
<style>body{{margin:0;font:14px Arial,sans-serif;background:#f5f5f5}} .top{{padding:10px 16px;background:#fff;
border-bottom:1px solid #dbdedf}} #work-area-crmwatch{{padding:0}}</style></head>
<body>
<div class="top">Настройки → Интеграции → crmwatch (стенд страницы amoCRM)</div>
<div id="work-area-crmwatch"></div>
<script type="application/json" id="card-host">{config}</script>
<script src="/card/sdk.js"></script>
<script src="/widget/script.js"></script>
</body></html>
"""


def create_card_host_app(host: CardHost) -> FastAPI:
    app = FastAPI(title="amoCRM card stand-in", docs_url=None, redoc_url=None, openapi_url=None)

    def read(name: str) -> bytes:
        with zipfile.ZipFile(host.widget_zip) as zf:
            return zf.read(name)

    @app.get("/card", response_class=HTMLResponse)
    async def card(lead_id: int = 31000001) -> HTMLResponse:
        settings = {"crmwatch_url": host.crmwatch_url}
        i18n = json.loads(read(f"i18n/{host.lang}.json"))
        config = {
            "leadId": lead_id,
            "lang": host.lang,
            "userId": host.user_id,
            "subdomain": host.subdomain,
            "settings": settings,
            "i18n": i18n,
        }
        blob = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
        return HTMLResponse(_PAGE.format(lang=host.lang, lead_id=lead_id, config=blob))

    @app.get("/settings/widgets/crmwatch", response_class=HTMLResponse)
    async def advanced_settings(area: str = "advanced_settings") -> HTMLResponse:
        # The widget's full-page locations: advanced_settings (a private integration's settings
        # page) and widget_page (its own section in the left menu) both give it #work-area-<code>.
        location = area if area in ("advanced_settings", "widget_page") else "advanced_settings"
        settings = {"crmwatch_url": host.crmwatch_url, "widget_code": "crmwatch"}
        i18n = json.loads(read(f"i18n/{host.lang}.json"))
        config = {
            "leadId": None,
            "lang": host.lang,
            "userId": host.user_id,
            "subdomain": host.subdomain,
            "settings": settings,
            "i18n": i18n,
            "area": location,
        }
        blob = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
        return HTMLResponse(_SETTINGS_PAGE.format(lang=host.lang, config=blob))

    @app.get("/card/sdk.js")
    async def sdk() -> Response:
        return Response(SDK_JS.read_text(encoding="utf-8"), media_type="text/javascript")

    @app.get("/card/token")
    async def token() -> Response:
        return Response(host.token(), media_type="text/plain", headers={"Cache-Control": "no-store"})

    @app.get("/widget/script.js")
    async def script() -> Response:
        return Response(read("script.js"), media_type="text/javascript")

    @app.get("/card/state")
    async def state() -> JSONResponse:
        return JSONResponse({"token_mode": host.token_mode, "tokens": len(host.tokens_issued)})

    return app
