"""The one settings class. Every knob is an environment variable with the CRMWATCH_ prefix."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import database_url as db_url

log = logging.getLogger("crmwatch.settings")

# Settings that apply to every CRM's client but were first named after amoCRM: old name → new
# name. The old environment variables (CRMWATCH_AMOCRM_MAX_RETRIES, …) and keyword arguments keep
# working, with a deprecation line in the log; the new name wins when both are given.
RENAMED = {
    "amocrm_max_retries": "crm_max_retries",
    "amocrm_backoff_base_seconds": "crm_backoff_base_seconds",
    "amocrm_backoff_cap_seconds": "crm_backoff_cap_seconds",
    "amocrm_timeout_seconds": "crm_timeout_seconds",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRMWATCH_", env_file=".env", extra="ignore")

    # `postgres://`, `postgresql://` and `sqlite:///` are accepted too (see app/database_url.py).
    database_url: str = "sqlite+aiosqlite:///./crmwatch.db"
    # The database password apart from the URL, put into it escaped: a password with @, :, / or %
    # breaks a URL written by hand (docker-compose.yml passes POSTGRES_PASSWORD here).
    database_password: SecretStr | None = None
    # A database that does not answer at start-up is retried this long before the process gives up.
    database_wait_seconds: float = Field(default=60.0, ge=0)
    # Bearer token of the admin API. Unset means the admin API refuses every call.
    admin_token: SecretStr | None = None
    # Encrypts CRM credentials at rest. Unset: a random key is kept in `secret_key_file`
    # so that a laptop run works with one command and survives restarts.
    secret_key: SecretStr | None = None
    secret_key_file: str = "./crmwatch.secret"
    public_url: str = "http://localhost:8000"
    log_level: str = "INFO"
    log_json: bool = True
    # Proxies trusted for X-Forwarded-For/-Proto (comma-separated addresses or networks, "*": any);
    # `crmwatch serve --forwarded-allow-ips` overrides it.
    forwarded_allow_ips: str = "127.0.0.1"
    # `crmwatch worker` and `scheduler` touch this file every few seconds while their loop runs,
    # for a container health check (they serve no HTTP). Unset: no file.
    heartbeat_file: str | None = None

    # Webhook bodies above this are refused with 413 before they are read in full.
    max_webhook_bytes: int = Field(default=1024 * 1024, ge=1)
    # Every other request body (the admin API, the card's forms and calls) above this: 413, also
    # for a chunked body that declares no length (it is counted as it arrives).
    max_request_bytes: int = Field(default=256 * 1024, ge=1)

    # Retention (README, "Retention and secrets at rest"), in days; 0 keeps that table's rows forever.
    # Applied inbox rows; failed ones stay until someone deals with them.
    retention_inbox_days: int = Field(default=30, ge=0)
    # Sent or cancelled outbox rows of resolved findings; dead ones stay until retried.
    retention_outbox_days: int = Field(default=30, ge=0)
    # Findings resolved this long ago, with their history (reports over older periods lose them).
    retention_findings_days: int = Field(default=365, ge=0)
    # How often the scheduler's leader purges.
    retention_purge_minutes: float = Field(default=60.0, gt=0)
    # Where the morning digest reaches the Telegram Bot API (the demo points it at its emulator).
    telegram_api_url: str = "https://api.telegram.org"

    # Background roles that `crmwatch serve` runs in-process.
    run_workers: bool = True
    inbox_poll_seconds: float = 1.0
    # Rows per inbox batch, applied set-based with one re-evaluation per account: large batches
    # are what makes apply keep up with intake (4000 over 2000, back to back in bench/apply.py:
    # 1230 vs 772 rows/s on a quiet machine, 603 vs 541 on a loaded one). (On SQLite at most
    # worker.SQLITE_BATCH, and while webhooks are arriving a few rows at a time: intake waits
    # for the write lock.)
    inbox_batch_size: int = 4000
    # Batches one worker process applies at once on PostgreSQL, each on other accounts (SQLite:
    # one). A batch mostly waits for the database, so a second one fills that wait.
    inbox_loops: int = Field(default=2, ge=1)
    inbox_max_attempts: int = 10
    # How often the scheduler looks for accounts due a sweep (each account's own interval is
    # in its rules document, 5 minutes by default).
    scheduler_tick_seconds: float = 15.0
    # How often the scheduler's leader re-evaluates the deals whose deadline has come
    # (app/findings/scheduler.tick_due): the most a time-based finding waits after its deadline.
    due_tick_seconds: float = Field(default=15.0, gt=0, le=300)

    # Every CRM client: retries of a failed request (429, 5xx, timeouts), their backoff, and the
    # timeout of one request.
    crm_max_retries: int = 6
    crm_backoff_base_seconds: float = 0.5
    crm_backoff_cap_seconds: float = 60.0
    crm_timeout_seconds: float = 20.0
    # How long the outbox holds a claimed batch before another worker may take it over; no CRM
    # wait inside a claim outlives it (app/outbox/delivery.py).
    outbox_lease_seconds: float = Field(default=300.0, gt=0)
    # amoCRM API limits (per account): 7 req/s is amoCRM's documented ceiling.
    amocrm_rate_per_second: float = 7.0
    # Bitrix24's leaky bucket per portal: drains `rate` requests a second, refuses above `burst`
    # (2/50 on most plans; Enterprise 5/250).
    bitrix24_rate_per_second: float = Field(default=2.0, gt=0)
    bitrix24_burst: int = Field(default=50, ge=1)
    # Deliveries a CRM queued for us (Bitrix24 offline events, app mode) are drained this often,
    # and once at start-up.
    queued_drain_seconds: float = Field(default=60.0, gt=0)
    # How far back the backfill reads stage-change events and notes.
    backfill_history_days: int = Field(default=90, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        prefix = cls.model_config.get("env_prefix", "")
        for old, new in RENAMED.items():
            env = f"{prefix}{old}".upper()
            given = data.pop(old, None)
            if given is None:
                given = os.environ.get(env)
            if given is None:
                continue
            # Logged when read: the line must be readable before logging is configured too.
            log.warning(
                "settings.deprecated: %s is deprecated, set %s instead",
                env,
                f"{prefix}{new}".upper(),
                extra={"setting": old, "use": new},
            )
            data.setdefault(new, given)
        return data

    # The old names, read-only, for code not yet moved to the new ones.
    @property
    def amocrm_max_retries(self) -> int:
        return self.crm_max_retries

    @property
    def amocrm_backoff_base_seconds(self) -> float:
        return self.crm_backoff_base_seconds

    @property
    def amocrm_backoff_cap_seconds(self) -> float:
        return self.crm_backoff_cap_seconds

    @property
    def amocrm_timeout_seconds(self) -> float:
        return self.crm_timeout_seconds

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return db_url.normalize(value)

    @model_validator(mode="after")
    def _password_into_url(self) -> Settings:
        if self.database_password is not None and self.database_password.get_secret_value():
            url = db_url.parse(self.database_url).set(password=self.database_password.get_secret_value())
            self.database_url = url.render_as_string(hide_password=False)
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
