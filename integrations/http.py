"""HTTP plumbing shared by every outside API client."""

from __future__ import annotations

import ssl
from functools import cache


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for the process: building one loads the CA bundle (~30 ms), and clients
    are made per batch of work."""
    return ssl.create_default_context()
