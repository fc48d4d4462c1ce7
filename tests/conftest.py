"""Shared fixtures: a real database (SQLite always, PostgreSQL when CRMWATCH_TEST_POSTGRES_URL
is set), the amoCRM emulator behind httpx's ASGI transport, and the app around them.

Each test gets an empty, migrated database: SQLite copies a migrated template file;
PostgreSQL migrates one throwaway database per run and truncates it between tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from app.db import Base, scratch_database
from app.main import create_app
from app.migrate import upgrade
from app.runtime import Runtime
from app.settings import Settings
from integrations.amocrm.demo_data import DEMO_TOKEN
from integrations.amocrm.emulator import EmulatorState, create_emulator_app
from integrations.bitrix24.emulator import Bitrix24Emulator, create_bitrix24_app
from integrations.http import HostRouter

PG_URL = os.environ.get("CRMWATCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgres"] if PG_URL else [])]
ADMIN_TOKEN = "test-admin-token"
AMO_BASE = "https://demoshop.amocrm.ru"
B24_HOST = "demoshop.bitrix24.ru"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    assert PG_URL, "only requested when CRMWATCH_TEST_POSTGRES_URL is set"
    with scratch_database(PG_URL, "crmwatch_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "crmwatch.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key",
        secret_key_file=str(tmp_path / "unused.secret"),
        public_url="http://crmwatch.test",
        run_workers=False,
        log_json=False,
        crm_backoff_base_seconds=0.01,
        crm_backoff_cap_seconds=0.05,
        # Tests that measure the rate limit set it back to amoCRM's 7/s.
        amocrm_rate_per_second=1000,
        bitrix24_rate_per_second=1000,
        bitrix24_burst=1000,
    )


@pytest.fixture
def amo() -> EmulatorState:
    """An empty amoCRM account that accepts DEMO_TOKEN; tests seed what they need."""
    state = EmulatorState()
    state.add_token(DEMO_TOKEN)
    return state


@pytest.fixture
def amo_rate_limit() -> int | None:
    """The emulator's rate limit; tests that measure it override this fixture."""
    return None


@pytest.fixture
def b24() -> Bitrix24Emulator:
    """An empty Bitrix24 portal (one deal category, no stages); tests seed what they need."""
    return Bitrix24Emulator()


@pytest.fixture
async def rt(
    settings: Settings, amo: EmulatorState, amo_rate_limit: int | None, b24: Bitrix24Emulator
) -> AsyncIterator[Runtime]:
    portal = httpx.ASGITransport(create_bitrix24_app(b24))
    transport = HostRouter(
        {B24_HOST: portal, "oauth.bitrix.info": portal},
        httpx.ASGITransport(create_emulator_app(amo, rate_limit_per_s=amo_rate_limit)),
    )
    runtime = Runtime.build(settings, http_transport=transport)
    if runtime.engine.dialect.name == "postgresql":
        async with runtime.engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield runtime
    await runtime.dispose()


@pytest.fixture
async def app(rt: Runtime) -> AsyncIterator[object]:
    application = create_app(runtime=rt, run_workers=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app),
        base_url="http://crmwatch.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as c:
        yield c


def form_body(name: str, **overrides: str) -> str:
    """A fixture webhook as amoCRM posts it: the key=value lines urlencoded in wire order."""
    lines = [
        ln for ln in (FIXTURES / "amocrm" / f"{name}.txt").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    pairs = [ln.split("=", 1) for ln in lines]
    pairs = [(k, overrides.get(k, v)) for k, v in pairs]
    return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in pairs)


FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "amoCRM-WebHook-client/1.0"}


async def create_account(client: httpx.AsyncClient, **extra: object) -> dict:
    body = {
        "name": "Демо",
        "crm": "amocrm",
        "base_url": AMO_BASE,
        "access_token": DEMO_TOKEN,
        "timezone": "Europe/Moscow",
        **extra,
    }
    resp = await client.post("/api/accounts", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


B24_WEBHOOK_URL = f"https://{B24_HOST}/rest/1/abc123secret/"
B24_FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Bitrix24 Webhook Engine"}


def b24_form(name: str, **overrides: str) -> str:
    """A fixture event as Bitrix24 posts it (keys as written in the file, e.g. "auth[member_id]")."""
    lines = [
        ln for ln in (FIXTURES / "bitrix24" / f"{name}.txt").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    pairs = [ln.split("=", 1) for ln in lines]
    pairs = [(k, overrides.get(k, v)) for k, v in pairs]
    return "&".join(quote(k, safe="") + "=" + quote(v, safe="") for k, v in pairs)


async def create_b24_account(client: httpx.AsyncClient, **extra: object) -> dict:
    from integrations.bitrix24.emulator import APP_TOKEN

    body = {
        "name": "Портал",
        "crm": "bitrix24",
        "base_url": B24_WEBHOOK_URL,
        "application_token": APP_TOKEN,
        "timezone": "Europe/Moscow",
        **extra,
    }
    resp = await client.post("/api/accounts", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()
