"""The pages a person opens in a browser at the service's own address: a landing page at `/`, and the
API docs (Swagger UI at /docs, ReDoc at /redoc) with their scripts served from the fastapi-offline
package, so the docs render on a machine with no internet (FastAPI's defaults load them from a CDN)."""

from __future__ import annotations

import html
from importlib.resources import files
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs-assets"
# fastapi-offline ships Swagger UI's and ReDoc's bundles as package data; we only serve its files.
ASSETS_DIR = files("fastapi_offline") / "static"

router = APIRouter(include_in_schema=False)

# ReDoc's footer shows Redocly's logo from their CDN; images from anywhere but here are not loaded.
SELF_IMAGES_ONLY = {"Content-Security-Policy": "img-src 'self' data:"}

_LANDING = {
    "ru": {
        "title": "crmwatch",
        "lead": "Следит за порядком в CRM: просроченные задачи, сделки без следующего шага, застрявшие сделки, "
        "звонки без записи. Предупреждения появляются в карточке сделки (виджет amoCRM, вкладка "
        "Битрикс24) и задачами в самой CRM.",
        "links": "Ссылки",
        "docs": "Документация API (Swagger UI)",
        "redoc": "Документация API (ReDoc)",
        "health": "Проверка состояния",
        "dashboard": "Панель руководителя открывается из CRM или по ссылке, которую создаёт "
        "<code>POST /api/accounts/{id}/dashboard/links</code> (административный API).",
        "admin": "Административный API (<code>/api/…</code>) требует заголовок "
        "<code>Authorization: Bearer &lt;CRMWATCH_ADMIN_TOKEN&gt;</code>.",
        "other": '<a href="/?lang=en">English</a>',
    },
    "en": {
        "title": "crmwatch",
        "lead": "Keeps a sales team's CRM honest: overdue tasks, deals without a next step, stuck deals, calls "
        "nobody wrote down. Warnings show in the deal card (amoCRM widget, Bitrix24 tab) and as tasks "
        "in the CRM itself.",
        "links": "Links",
        "docs": "API documentation (Swagger UI)",
        "redoc": "API documentation (ReDoc)",
        "health": "Health check",
        "dashboard": "The head of sales' dashboard opens from the CRM, or through a link made with "
        "<code>POST /api/accounts/{id}/dashboard/links</code> (admin API).",
        "admin": "The admin API (<code>/api/…</code>) needs "
        "<code>Authorization: Bearer &lt;CRMWATCH_ADMIN_TOKEN&gt;</code>.",
        "other": '<a href="/?lang=ru">Русский</a>',
    },
}


def landing_html(lang: str) -> str:
    t = _LANDING[lang]
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(t["title"])}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}}
code{{background:#f3f3f3;padding:0 .2em}} li{{margin:.3em 0}}</style></head>
<body><h1>crmwatch</h1><p>{t["lead"]}</p>
<h2>{t["links"]}</h2><ul>
<li><a href="/docs">{t["docs"]}</a></li>
<li><a href="/redoc">{t["redoc"]}</a></li>
<li><a href="/healthz">{t["health"]}</a> (<code>/healthz</code>)</li>
</ul><p>{t["dashboard"]}</p><p>{t["admin"]}</p><p>{t["other"]}</p></body></html>"""


@router.get("/", response_class=HTMLResponse)
async def landing(lang: Literal["ru", "en"] = "ru") -> HTMLResponse:
    return HTMLResponse(landing_html(lang))


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title="crmwatch - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
    )


@router.get("/docs/oauth2-redirect", response_class=HTMLResponse)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title="crmwatch - ReDoc",
        redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(SELF_IMAGES_ONLY)
    return page


def install(app: FastAPI) -> None:
    """The pages and the docs' assets; the app must be created with docs_url=None, redoc_url=None."""
    app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")
