"""empty_comment: a note on a deal too short to say anything, or a stock phrase ("ок", "перезвонить")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy import Select, and_, func, or_, select, true

from app.mirror.models import Deal, Note
from app.mirror.text import fold

from .base import RenderContext, Rule, RuleContext, RuleSettings

STOCK_PHRASES = ["связался", "связались", "перезвонить", "перезвоню", "позвонить", "созвонились", "ок", "ok",
                 "нет ответа", "не дозвонился", "не берет трубку", "недозвон", "+", "-", "."]


class Settings(RuleSettings):
    min_chars: int = Field(default=20, ge=1, le=1000)
    stock_phrases: list[str] = Field(default_factory=lambda: list(STOCK_PHRASES))
    lookback_days: int = Field(default=7, ge=1, le=90, description="older notes are not judged")

    @field_validator("stock_phrases")
    @classmethod
    def _fold(cls, phrases: list[str]) -> list[str]:
        return sorted({fold(p) or "" for p in phrases})


def _empty(note: Any, st: Settings) -> Any:
    return or_(note.text_norm.is_(None), func.length(note.text_norm) < st.min_chars,
               note.text_norm.in_(st.stock_phrases))


def violations(ctx: RuleContext) -> Select[Any]:
    st: Settings = ctx.settings
    later = Note.__table__.alias("later")
    # A proper comment written after the empty one answers it.
    answered = (select(later.c.id).where(later.c.account_id == Note.account_id, later.c.deal_id == Note.deal_id,
                                         later.c.kind == "common", later.c.created_at > Note.created_at,
                                         ~_empty(later.c, st)).exists())
    return (
        select(Note.id.label("entity_id"), Note.deal_id.label("deal_id"),
               func.coalesce(Note.created_by, Deal.responsible_user_id).label("manager_id"),
               Note.created_at.label("started_at"), true().label("opens"))
        .join(Deal, and_(Deal.account_id == Note.account_id, Deal.id == Note.deal_id))
        .where(*ctx.open_deal(), Note.account_id == ctx.account_id, Note.kind == "common",
               Note.created_at >= ctx.at(ctx.now - timedelta(days=st.lookback_days)), _empty(Note, st), ~answered)
    )


def render(finding: Any, rc: RenderContext) -> tuple[str, dict[str, Any]]:
    note = rc.notes.get(finding.entity_id)
    text = (note.text or "").strip() if note else ""
    message = (f"Пустой комментарий «{text}»: опишите итог контакта" if rc.lang == "ru"
               else f"Empty comment “{text}”: write what the contact was about")
    return message, {"note_id": finding.entity_id, "text": text, "written_at": finding.started_at.isoformat()}


RULE = Rule(
    name="empty_comment", version=1, entity_type="note", severity="info",
    title={"ru": "Пустой комментарий", "en": "Empty comment"},
    settings=Settings, violations=violations, render=render,
)
