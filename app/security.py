"""Admin authentication and encryption of CRM credentials at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Starlette's, not FastAPI's (a subclass, handled alike by app/errors.py): `crmwatch worker`
# imports this module for CredentialBox, and importing fastapi cost it a third of its start-up.
from starlette import status
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.settings import Settings

log = logging.getLogger(__name__)


def _fernet_key(secret: str) -> bytes:
    # Operators paste any string; HKDF turns it into the 32 bytes Fernet needs.
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"crmwatch", info=b"credentials-v1").derive(secret.encode())
    return base64.urlsafe_b64encode(raw)


def derived_key(server_secret: str, purpose: bytes) -> bytes:
    """A key of its own for one use of the server secret (HKDF), so that a token signed for one
    purpose (a card session, a page link) can never pass for another, nor open credentials."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"crmwatch", info=purpose).derive(server_secret.encode())


def load_secret(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = Path(settings.secret_key_file)
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    log.warning("secret.generated", extra={"file": str(path), "hint": "set CRMWATCH_SECRET_KEY in production"})
    return secret


class CredentialBox:
    """Seals credential dicts with Fernet (AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, secret: str) -> None:
        self._fernet = Fernet(_fernet_key(secret))

    def seal(self, data: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(data, separators=(",", ":")).encode())

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise RuntimeError("credentials cannot be decrypted: was CRMWATCH_SECRET_KEY changed?") from None


def new_hook_key() -> str:
    return secrets.token_urlsafe(24)


async def require_admin(request: Request) -> None:
    settings: Settings = request.app.state.runtime.settings
    expected = settings.admin_token.get_secret_value() if settings.admin_token else None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the admin API is disabled: set CRMWATCH_ADMIN_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid admin bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def webhook_secret_hash(secret: str | None) -> str | None:
    """What is stored of a secret the CRM puts into each delivery: enough to check it, not to forge it."""
    return hashlib.sha256(secret.encode()).hexdigest() if secret else None


def webhook_secret_matches(secret: str | None, stored_hash: str | None) -> bool:
    if not secret or not stored_hash:
        return False
    return hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), stored_hash)
