"""Senders by kind: the outbox moves rows, a sender knows what a row of its kind means.

Each domain that writes to the CRM registers its kinds when it is imported (app/findings/notify.py:
tasks, notes and closures for findings; app/calls/calllog.py: the call log), so the outbox
imports none of them. A sender gets one claimed batch of its kind and returns its Outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.accounts.models import Account
from app.runtime import Runtime
from integrations.base import CrmClient

from .models import OutboxAction


def marker(row_id: int) -> str:
    """The short mark a call-log note carries (and tasks and notes did before they carried a link to
    their page), so that a row tried before is found in the CRM."""
    return f"#cw{row_id}"


def page_marker(row_id: int) -> str:
    """The part of a task's or note's link (its page, app/findings/page.py) that names its row:
    read back like marker(), but what a person sees is a link they can open."""
    return f"/f/{row_id}-"


@dataclass
class Outcome:
    """What became of a batch's rows. A row in none of the sets was not confirmed by the CRM: it
    is retried on its own schedule."""

    sent: dict[int, str | None] = field(default_factory=dict)  # row id → the CRM's id (None: a task closed)
    postponed: set[int] = field(default_factory=set)  # waits a little (the task to close is on its way)
    cancelled: set[int] = field(default_factory=set)  # nothing left to do
    texts: dict[int, str] = field(default_factory=dict)  # row id → the text written (kept on the row)


@dataclass
class Batch:
    """One claimed batch of one account and one kind, and the client to send it with. `outcome`
    is filled as the sender goes, so a request failing midway keeps what already landed; the
    sender returns it."""

    rt: Runtime
    client: CrmClient | Any
    account: Account
    rows: list[OutboxAction]
    now: datetime
    outcome: Outcome = field(default_factory=Outcome)


Sender = Callable[[Batch], Awaitable[Outcome]]

SENDERS: dict[str, Sender] = {}


def register(kind: str, sender: Sender) -> None:
    if SENDERS.get(kind, sender) is not sender:
        raise RuntimeError(f"two senders for outbox kind {kind!r}")
    SENDERS[kind] = sender
