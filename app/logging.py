"""Structured logs: one JSON object a line, with the request id, and never a secret.

Modules log through the standard library (`logging.getLogger(__name__)`, data in `extra=`);
structlog renders those records, so third-party libraries end up in the same stream.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_FIELDS = re.compile(r"token|secret|password|authorization|credential|api_key|^key$|^code$", re.I)
# Webhook URLs carry the account's key: /hooks/amocrm/<key>, /hooks/telephony/mango/<key>/…
# Secrets that travel in a path: webhook keys, and the dashboard's read-only link secrets.
_HOOK_PATH = re.compile(r"(/hooks/(?:telephony/)?[a-z0-9_]+/|/dashboard/l/)[^/?\s]+")


def mask_path(path: str) -> str:
    return _HOOK_PATH.sub(r"\1***", path)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key not in ("event", "level", "logger", "timestamp") and _SECRET_FIELDS.search(key):
            event[key] = "***"
        elif isinstance(value, str) and ("/hooks/" in value or "/dashboard/l/" in value):
            event[key] = mask_path(value)
    return event


def configure(level: str = "INFO", json_output: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our access log masks webhook keys; uvicorn's would print them.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpcore", "aiosqlite", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
