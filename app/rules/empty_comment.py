"""empty_comment: a note on a deal too short to say anything, or a stock phrase ("ок", "перезвонить").

Past the look-back window an empty comment nobody followed with a proper one EXPIRES: what the
talk was about is gone by then, and the finding stays on record as not fixed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy import Select, and_, func, or_, select, true

from app import wording
from app.mirror.models import Deal, Note
from app.mirror.text import fold

from .base import RenderContext, Rule, RuleContext, RuleSettings, moment, one_of

STOCK_PHRASES = [
    "связался",
    "связались",
    "перезвонить",
    "перезвоню",
    "позвонить",
    "созвонились",
    "ок",
    "ok",
    "нет ответа",
    "не дозвонился",
    "не берет трубку",
    "недозвон",
    "+",
    "-",
    ".",
]


class Settings(RuleSettings):
    min_chars: int = Field(default=20, ge=1, le=1000)
    stock_phrases: list[str] = Field(default_factory=lambda: list(STOCK_PHRASES))
    lookback_days: int = Field(default=7, ge=1, le=90, description="older notes are not judged")

    @field_validator("stock_phrases")
    @classmethod
    def _fold(cls, phrases: list[str]) -> list[str]:
        return sorted({fold(p) or "" for p in phrases})


def _empty(note: Any, min_chars: Any, stock: list[str]) -> Any:
    return or_(note.text_norm.is_(None), func.length(note.text_norm) < min_chars, one_of(note.text_norm, stock))


def violations(ctx: RuleContext) -> Select[Any]:
    # Length and look-back follow pipeline and stage overrides; the stock phrases are one list
    # per account (a phrase that says nothing says nothing in any stage).
    min_chars = ctx.per_stage(lambda st: st.min_chars)
    since = ctx.lookback_per_stage(lambda st: timedelta(days=st.lookback_days))
    stock = ctx.settings.stock_phrases
    later = Note.__table__.alias("later")
    # A proper comment written after the empty one answers it.
    answered = (
        select(later.c.id)
        .where(
            later.c.account_id == Note.account_id,
            later.c.deal_id == Note.deal_id,
            later.c.kind == "common",
            later.c.created_at > Note.created_at,
            later.c.created_at >= since,  # implied; lets an index bound it
            ~_empty(later.c, min_chars, stock),
        )
        .exists()
    )
    return (
        select(
            Note.id.label("entity_id"),
            Note.deal_id.label("deal_id"),
            func.coalesce(Note.created_by, Deal.responsible_user_id).label("manager_id"),
            Note.created_at.label("started_at"),
            true().label("opens"),
        )
        .join(Deal, and_(Deal.account_id == Note.account_id, Deal.id == Note.deal_id))
        .where(
            *ctx.open_deal(),
            Note.account_id == ctx.account_id,
            Note.kind == "common",
            Note.created_at >= since,
            *ctx.entity_scope(Note.id),
            _empty(Note, min_chars, stock),
            ~answered,
        )
    )


def timing(ctx: RuleContext) -> list[Select[Any]]:
    """An empty comment nobody answered leaves the look-back window (and expires) `lookback_days` after it."""
    days = ctx.per_stage(lambda st: st.lookback_days * 86400.0)
    return [violations(ctx).with_only_columns(*moment(Note.deal_id, Note.created_at, days, False))]


def sweep_timing(ctx: RuleContext, active: Any) -> list[Select[Any]]:
    """timing() for a sweep: the empty comments nobody answered are this rule's active findings,
    written at their started_at (no second run of the search for a later proper comment)."""
    days = ctx.per_stage(lambda st: st.lookback_days * 86400.0)
    since = ctx.lookback_per_stage(lambda st: timedelta(days=st.lookback_days))
    query = select(*moment(active.c.deal_id, active.c.started_at, days, False)).select_from(active)
    return [ctx.with_stage(query, active.c.deal_id).where(active.c.started_at >= since)]


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    note = rc.notes.get(finding.entity_id)
    text = (note.text or "").strip() if note else ""
    message = wording.of(rc.lang).RULE_MESSAGES["empty_comment"].format(text=text)
    return message, {"note_id": finding.entity_id, "text": text, "written_at": finding.started_at.isoformat()}


RULE = Rule(
    name="empty_comment",
    version=1,
    entity_type="note",
    severity="info",
    title=wording.titles("empty_comment"),
    settings=Settings,
    violations=violations,
    render=render,
    timing=timing,
    sweep_timing=sweep_timing,
    past_window="expire",
)
