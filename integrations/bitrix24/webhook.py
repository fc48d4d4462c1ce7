"""Bitrix24 event deliveries → domain events.

Bitrix24 posts a PHP-style form: `event`, `data[FIELDS][ID]` (tasks: `data[FIELDS_AFTER][ID]`),
`ts`, `auth[domain]`, `auth[member_id]`, `auth[application_token]`, … Events carry ids only,
so most become RecordNamed and the worker reads the record. Offline events drained through
event.offline.get are stored as JSON ({"event", "data", "offline": {…}}) and parse the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from integrations.base import (
    CompanyDeleted,
    ContactDeleted,
    CredentialsIssued,
    DealDeleted,
    DomainEvent,
    ParsedWebhook,
    RecordNamed,
    ScrubbedWebhook,
    TaskDeleted,
    UnknownEntity,
    WebhookMalformed,
)
from integrations.formdata import MAX_FIELDS, FormError, parse_bracket_form, scan_bracket_form

from .calls import call_end
from .wire import ACTIVITY_PREFIX, TASK_PREFIX

TOKEN_FIELD = "auth[application_token]"
# What a stored delivery keeps of the application token: enough to tell it was signed, not to sign.
TOKEN_SHA256_FIELD = "auth[application_token_sha256]"
# The OAuth pair Bitrix24 puts into an app's deliveries (the install's is saved, the rest dropped).
OAUTH_FIELDS = ("auth[access_token]", "auth[refresh_token]")
_WANTED = frozenset({"event", "auth[member_id]", TOKEN_FIELD, TOKEN_SHA256_FIELD})
INSTALL_EVENT = "ONAPPINSTALL"
CALL_END_EVENT = "ONVOXIMPLANTCALLEND"

# What crmwatch subscribes to (event.bind), online and offline.
SUBSCRIBED = (
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALDELETE",
    "ONTASKADD",
    "ONTASKUPDATE",
    "ONTASKDELETE",
    "ONCRMACTIVITYADD",
    "ONCRMACTIVITYUPDATE",
    "ONCRMACTIVITYDELETE",
    "ONCRMTIMELINECOMMENTADD",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
)
# Bitrix24 offers no offline copy of telephony events: a call missed while we were down is not replayed.
ONLINE_ONLY = (CALL_END_EVENT,)

_NAMED = {
    "ONCRMDEALADD": "deal",
    "ONCRMDEALUPDATE": "deal",
    "ONCRMACTIVITYADD": "activity",
    "ONCRMACTIVITYUPDATE": "activity",
    "ONTASKADD": "task",
    "ONTASKUPDATE": "task",
    "ONCRMTIMELINECOMMENTADD": "comment",
    "ONCRMCONTACTADD": "contact",
    "ONCRMCONTACTUPDATE": "contact",
    # Company events carry data[FIELDS][ID] only, like the contact ones: the record is read.
    "ONCRMCOMPANYADD": "company",
    "ONCRMCOMPANYUPDATE": "company",
}


def _is_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"


def check(body: bytes) -> ParsedWebhook:
    if _is_json(body):
        raise WebhookMalformed("Bitrix24 posts events as a form, not JSON")
    try:
        roots, found = scan_bracket_form(body, _WANTED)
    except FormError as exc:
        raise WebhookMalformed(str(exc)) from None
    if "event" not in roots or "auth" not in roots:
        raise WebhookMalformed("no event or auth fields")
    event = (found.get("event") or "").upper()
    if not event:
        raise WebhookMalformed("empty event name")
    return ParsedWebhook(
        external_account_id=found.get("auth[member_id]") or None,
        subdomain=None,
        secret=found.get(TOKEN_FIELD) or None,
        issues_secret=event == INSTALL_EVENT,
        secret_sha256=found.get(TOKEN_SHA256_FIELD) or None,
    )


def scrub(body: bytes) -> ScrubbedWebhook:
    """The delivery without its secrets (run after check, on a form it accepted): the application
    token becomes its SHA-256, the OAuth pair is dropped, except an install's, which is handed back
    to be sealed (the worker saves it as the account's credentials)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookMalformed(f"not a form-encoded body: {exc}") from None
    install = any(k == "event" and v.upper() == INSTALL_EVENT for k, v in pairs)
    kept: list[tuple[str, str]] = []
    sealed: dict[str, str] = {}
    for key, value in pairs:
        if key == TOKEN_FIELD:
            kept.append((TOKEN_SHA256_FIELD, hashlib.sha256(value.encode()).hexdigest() if value else ""))
        elif key in OAUTH_FIELDS:
            if install and value:
                sealed[key] = value
        elif key != TOKEN_SHA256_FIELD:  # only ours may say what the token's hash is
            kept.append((key, value))
    return ScrubbedWebhook(urlencode(kept).encode(), sealed)


def _record_id(data: Any, event: str) -> str | None:
    if not isinstance(data, dict):
        return None
    for section in ("FIELDS_AFTER", "FIELDS_BEFORE") if event.startswith("ONTASK") else ("FIELDS",):
        fields = data.get(section)
        if isinstance(fields, dict) and fields.get("ID") not in (None, ""):
            return str(fields["ID"])
    # Timeline comment events carry the id directly: data[ID].
    if data.get("ID") not in (None, "") and not isinstance(data.get("ID"), dict):
        return str(data["ID"])
    return None


def _tree(body: bytes) -> dict[str, Any]:
    if _is_json(body):
        try:
            tree = json.loads(body)
        except ValueError as exc:
            raise WebhookMalformed(f"bad JSON: {exc}") from None
        if not isinstance(tree, dict):
            raise WebhookMalformed("not an object")
        return tree
    try:
        return parse_bracket_form(body)
    except FormError as exc:
        raise WebhookMalformed(str(exc)) from None


def parse(body: bytes, *, region: str, received_at: datetime) -> list[DomainEvent]:
    tree = _tree(body)
    event = str(tree.get("event") or "").upper()
    data = tree.get("data")
    if event == INSTALL_EVENT:
        return [_install(tree, received_at)]
    if event == CALL_END_EVENT:
        return call_end(data, region=region)
    rid = _record_id(data, event)
    if event in _NAMED:
        return [RecordNamed(_NAMED[event], rid)] if rid else []
    if rid and event == "ONCRMDEALDELETE":
        return [DealDeleted(rid)]
    if rid and event == "ONCRMACTIVITYDELETE":
        return [TaskDeleted(ACTIVITY_PREFIX + rid)]
    if rid and event == "ONTASKDELETE":
        return [TaskDeleted(TASK_PREFIX + rid)]
    if rid and event == "ONCRMCONTACTDELETE":
        return [ContactDeleted(rid)]
    if rid and event == "ONCRMCOMPANYDELETE":
        return [CompanyDeleted(rid)]
    return [UnknownEntity(event.lower() or "unknown")]


def _install(tree: dict[str, Any], received_at: datetime) -> CredentialsIssued:
    auth = tree.get("auth") if isinstance(tree.get("auth"), dict) else {}
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    creds: dict[str, Any] = {}
    for key in ("access_token", "refresh_token", "client_endpoint", "server_endpoint", "domain"):
        if auth.get(key):
            creds[key] = auth[key]
    expires = None
    if re.fullmatch(r"[0-9]{1,12}", str(auth.get("expires") or "")):
        expires = datetime.fromtimestamp(int(auth["expires"]), UTC)
    elif re.fullmatch(r"[0-9]{1,9}", str(auth.get("expires_in") or "")):
        expires = received_at + timedelta(seconds=int(auth["expires_in"]))
    if creds.get("access_token"):
        creds["expires_at"] = (expires or received_at + timedelta(hours=1)).isoformat()
    creds["installed"] = str(data.get("INSTALLED") or "Y")
    return CredentialsIssued(
        credentials=creds,
        external_id=auth.get("member_id") or None,
        webhook_secret=auth.get("application_token") or None,
        webhook_secret_sha256=auth.get("application_token_sha256") or None,
    )
