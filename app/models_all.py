"""Imports every model module so Base.metadata knows all tables (Alembic, tests)."""

from app.accounts.models import Account
from app.ingest.models import InboxEvent
from app.mirror.models import Contact, ContactPhone, Deal, DealContact, Note, Pipeline, Stage, StageHistory, Task, User

__all__ = ["Account", "Contact", "ContactPhone", "Deal", "DealContact", "InboxEvent", "Note", "Pipeline", "Stage",
           "StageHistory", "Task", "User"]
