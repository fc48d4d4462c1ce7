"""The link to a finding's page (page.py), as the outbox's texts carry it.

Apart from the page itself so that what writes the texts (notify.py, run by `crmwatch worker`)
does not import the web framework the page needs: that import was a third of the worker's start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.outbox.senders import page_marker
from app.security import derived_key


def signature(server_secret: str, row_id: int) -> str:
    mac = hmac.new(derived_key(server_secret, b"finding-page-v1"), str(row_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:16]


def url(public_url: str, server_secret: str, row_id: int) -> str:
    """The page of this outbox row; it contains page_marker(row_id)."""
    link = f"{public_url.rstrip('/')}{page_marker(row_id)}{signature(server_secret, row_id)}"
    assert page_marker(row_id) in link
    return link
