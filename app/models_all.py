"""Imports every model module so Base.metadata knows all tables (Alembic, tests)."""

from app.accounts.models import Account
from app.calls.models import Call, CallStatsDaily, TelephonyConfig
from app.dashboard.models import DashboardLink
from app.digest.models import DigestSettings
from app.findings.models import DueMoment, Finding, FindingEvent
from app.ingest.models import InboxEvent
from app.mirror.models import (
    Company,
    Contact,
    ContactPhone,
    Deal,
    DealContact,
    Note,
    Pipeline,
    Stage,
    StageHistory,
    Task,
    User,
)
from app.outbox.models import OutboxAction
from app.plans.models import Plan
from app.rules.models import RuleConfig
from app.widget.models import WidgetConfig, WidgetTokenUse

__all__ = [
    "Account",
    "Call",
    "CallStatsDaily",
    "Company",
    "Contact",
    "ContactPhone",
    "DashboardLink",
    "Deal",
    "DealContact",
    "DigestSettings",
    "DueMoment",
    "Finding",
    "FindingEvent",
    "InboxEvent",
    "Note",
    "OutboxAction",
    "Pipeline",
    "Plan",
    "RuleConfig",
    "Stage",
    "StageHistory",
    "Task",
    "TelephonyConfig",
    "User",
    "WidgetConfig",
    "WidgetTokenUse",
]
