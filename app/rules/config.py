"""The per-account rules document: settings, overrides by pipeline and stage, exclusions,
suppression and the business calendar. Validated as a whole, stored as one JSON row."""

from __future__ import annotations

from datetime import date, time
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts_service
from app.calendar.business import BusinessCalendar, CalendarConfig
from app.mirror.models import Pipeline, Stage

from .base import Exclusions, ResolvedRuleConfig
from .models import RuleConfig
from .registry import RULES

DEFAULT_SUPPRESS = {"stuck_stage": ["deal_without_task"]}


def _stage_key(key: str) -> tuple[str, str]:
    pipeline, sep, stage = key.partition("/")
    if not sep or not pipeline or not stage:
        raise ValueError(f"a stage is written 'pipeline_id/stage_id', got {key!r}")
    return pipeline, stage


class ExcludeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipelines: list[str] = Field(default_factory=list)
    stages: list[str] = Field(default_factory=list, description="'pipeline_id/stage_id'")
    users: list[str] = Field(default_factory=list)

    @field_validator("stages")
    @classmethod
    def _stages(cls, keys: list[str]) -> list[str]:
        for key in keys:
            _stage_key(key)
        return keys


class NotifyIn(BaseModel):
    """What a finding of this rule does in the CRM. Hours are working hours."""

    model_config = ConfigDict(extra="forbid")
    task: bool = Field(default=True, description="a task for the responsible manager when the finding opens")
    task_due_hours: float = Field(default=4, gt=0, le=720)
    task_type_id: str | None = Field(default=None, description="the CRM's task type; null: its default (a call)")
    note: bool = Field(default=True, description="a note on the deal card when the finding opens")
    close_on_resolve: bool = Field(default=True, description="close the task when the finding resolves")
    note_on_resolve: bool = False
    escalate_after_hours: float | None = Field(
        default=8, gt=0, le=2000, description="a task for the head of sales if still open; null: never"
    )
    repeat_hours: float | None = Field(
        default=24, gt=0, le=2000, description="remind on the card while still open, in working hours; null: never"
    )


class RuleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # null: the rule's own default (every rule is on but plan_behind_pace); GET fills it in.
    enabled: bool | None = None
    notify: NotifyIn = Field(default_factory=NotifyIn)
    settings: dict[str, Any] = Field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = Field(default_factory=dict, description="overrides by pipeline id")
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict, description="overrides by 'pipeline_id/stage_id'")
    exclude: ExcludeIn = Field(default_factory=ExcludeIn)


# A local wall-clock time ("09:00", "18:30:00"): JSON Schema's `format: time` demands a zone, which
# these never have (the account's time zone applies).
WallTime = Annotated[
    time,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?$",
            "examples": ["09:00"],
        }
    ),
]


class CalendarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str | None = Field(default="RU", description="public holidays and transferred working days; null: none")
    work_start: WallTime = time(9, 0)
    work_end: WallTime = time(18, 0)
    work_days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="ISO weekdays, Monday = 1")
    extra_holidays: list[date] = Field(default_factory=list)
    extra_workdays: list[date] = Field(default_factory=list)

    @field_validator("work_start", "work_end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a wall-clock time without a zone (the account's time zone applies), e.g. 09:00")
        return value

    @field_validator("work_days")
    @classmethod
    def _days(cls, days: list[int]) -> list[int]:
        if not days or any(d < 1 or d > 7 for d in days):
            raise ValueError("work_days are ISO weekdays 1..7, at least one")
        return sorted(set(days))

    @model_validator(mode="after")
    def _hours(self) -> CalendarIn:
        if self.work_end <= self.work_start:
            raise ValueError("work_end must be after work_start")
        if self.country is not None:
            import holidays

            if self.country.upper() not in holidays.list_supported_countries():
                raise ValueError(f"no public holiday calendar for country {self.country!r}")
            self.country = self.country.upper()
        return self


MILESTONES = ("first_contact", "meeting_held", "proposal_sent")


class MilestoneIn(BaseModel):
    """What counts as reaching a milestone (each deal once per period, whichever source says it)."""

    model_config = ConfigDict(extra="forbid")
    stages: list[str] = Field(default_factory=list, description="entering one of these 'pipeline_id/stage_id'")
    task_types: list[str] = Field(default_factory=list, description="a task of one of these CRM types completed")
    calls: bool = Field(default=False, description="an answered call of at least min_call_seconds")

    @field_validator("stages")
    @classmethod
    def _stages(cls, keys: list[str]) -> list[str]:
        for key in keys:
            _stage_key(key)
        return keys


class PlansIn(BaseModel):
    """Targets counted back from the plan, and the pace against it."""

    model_config = ConfigDict(extra="forbid")
    milestones: dict[str, MilestoneIn] = Field(
        default_factory=dict, description=f"by milestone: {', '.join(MILESTONES)}"
    )
    min_call_seconds: int = Field(default=40, ge=1, le=3600)
    history_days: int = Field(default=90, ge=7, le=366, description="the conversions' window")
    min_history: int = Field(
        default=5, ge=1, le=1000, description="fewer of the earlier step than this: the team's conversion applies"
    )

    @field_validator("milestones")
    @classmethod
    def _known(cls, value: dict[str, MilestoneIn]) -> dict[str, MilestoneIn]:
        for name in value:
            if name not in MILESTONES:
                raise ValueError(f"unknown milestone {name!r}; known: {', '.join(MILESTONES)}")
        return value


class AbcXyzIn(BaseModel):
    """ABC by revenue share, XYZ by the coefficient of variation of monthly revenue (percent)."""

    model_config = ConfigDict(extra="forbid")
    clients: Literal["contact", "company"] = "contact"
    a_share: float = Field(default=80, gt=0, lt=100, description="A: the clients who make the top a_share %")
    b_share: float = Field(default=15, gt=0, lt=100, description="B: the next b_share %; C: the rest")
    x_cv: float = Field(default=10, ge=0, le=1000, description="X: coefficient of variation at most x_cv %")
    y_cv: float = Field(default=25, ge=0, le=1000, description="Y: at most y_cv %; Z: above, or one purchase")

    @model_validator(mode="after")
    def _order(self) -> AbcXyzIn:
        if self.a_share + self.b_share >= 100:
            raise ValueError("a_share + b_share must leave something for C (below 100)")
        if self.y_cv < self.x_cv:
            raise ValueError("y_cv must not be below x_cv")
        return self


class RulesDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calendar: CalendarIn = Field(default_factory=CalendarIn)
    # Findings follow their deadlines by the scheduler's tick; the whole account is swept as a
    # reconciliation nightly at this local time (and after a settings change, a resume, a re-sync).
    sweep_at: WallTime = Field(default=time(3, 0), description="local time of the nightly full sweep")
    sweep_interval_minutes: int = Field(
        default=5, ge=1, le=1440, description="how often escalations and reminders are looked for"
    )

    @field_validator("sweep_at")
    @classmethod
    def _sweep_wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a wall-clock time without a zone (the account's time zone applies), e.g. 03:00")
        return value

    rules: dict[str, RuleEntry] = Field(default_factory=dict)
    # Escalations go to the team's head of sales (team_supervisors: manager id → supervisor id),
    # else to supervisor_user_id; with neither, nothing escalates.
    supervisor_user_id: str | None = None
    team_supervisors: dict[str, str] = Field(default_factory=dict)
    # What the first sweep after connecting (or a full re-sync) does with the problems that were
    # already there: "summary", one task per manager with their counts by rule and one for the
    # supervisor; "none", nothing (they show in crmwatch only); "all", a task and a note for each.
    announce_backlog: Literal["summary", "none", "all"] = "summary"
    # When one evaluation would write more than this many tasks and notes for one person, they get
    # one task that sums them up instead (the findings stay listed in crmwatch).
    flood_limit: int = Field(default=20, ge=1, le=10_000)
    # rule → the rules whose open finding on the same deal keeps it quiet
    suppress: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SUPPRESS.items()})
    plans: PlansIn = Field(default_factory=PlansIn)
    abcxyz: AbcXyzIn = Field(default_factory=AbcXyzIn)

    @model_validator(mode="after")
    def _check(self) -> RulesDocument:
        for name, entry in self.rules.items():
            if name not in RULES:
                raise ValueError(f"unknown rule {name!r}; known: {', '.join(sorted(RULES))}")
            model = RULES[name].settings
            base = _validated(model, entry.settings, f"rules.{name}.settings")
            for pid, override in entry.pipelines.items():
                _validated(model, {**base.model_dump(), **override}, f"rules.{name}.pipelines.{pid}")
            for key, override in entry.stages.items():
                _stage_key(key)
                _validated(model, {**base.model_dump(), **override}, f"rules.{name}.stages.{key}")
        for target, inhibitors in self.suppress.items():
            for name in [target, *inhibitors]:
                if name not in RULES:
                    raise ValueError(f"suppress names an unknown rule {name!r}")
        return self

    def with_defaults(self) -> RulesDocument:
        """Every rule present, with its settings filled in: what GET shows."""
        rules = {}
        for name, rule in RULES.items():
            entry = self.rules.get(name, RuleEntry())
            rules[name] = entry.model_copy(
                update={
                    "enabled": self._enabled(name, entry),
                    "settings": rule.settings.model_validate(entry.settings).model_dump(mode="json"),
                }
            )
        return self.model_copy(update={"rules": rules})

    @staticmethod
    def _enabled(name: str, entry: RuleEntry) -> bool:
        return RULES[name].enabled_by_default if entry.enabled is None else entry.enabled

    def notify(self, name: str) -> NotifyIn:
        return self.rules.get(name, RuleEntry()).notify

    def resolved(self, name: str) -> ResolvedRuleConfig:
        model = RULES[name].settings
        entry = self.rules.get(name, RuleEntry())
        base = model.model_validate(entry.settings)
        merged = base.model_dump()
        return ResolvedRuleConfig(
            enabled=self._enabled(name, entry),
            settings=base,
            pipelines={pid: model.model_validate({**merged, **o}) for pid, o in entry.pipelines.items()},
            stages={_stage_key(k): model.model_validate({**merged, **o}) for k, o in entry.stages.items()},
            exclude=Exclusions(
                pipelines=frozenset(entry.exclude.pipelines),
                stages=frozenset(_stage_key(k) for k in entry.exclude.stages),
                users=frozenset(entry.exclude.users),
            ),
        )

    def business_calendar(self, timezone: str) -> BusinessCalendar:
        c = self.calendar
        return _calendar(
            CalendarConfig(
                timezone=timezone,
                country=c.country,
                work_start=c.work_start,
                work_end=c.work_end,
                work_days=frozenset(d - 1 for d in c.work_days),
                extra_holidays=frozenset(c.extra_holidays),
                extra_workdays=frozenset(c.extra_workdays),
            )
        )


@lru_cache(maxsize=256)
def _calendar(config: CalendarConfig) -> BusinessCalendar:
    # Shared per configuration: a calendar caches its days and each year's holidays (building
    # one year of `holidays` costs about a millisecond), and every evaluation needs one.
    return BusinessCalendar(config)


def _validated(model: type[BaseModel], data: dict[str, Any], where: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{where}{'.' + loc if loc else ''}: {first.get('msg')}") from None


async def load(s: AsyncSession, account_id: int) -> RulesDocument:
    row = await s.get(RuleConfig, account_id)
    return RulesDocument.model_validate(row.document) if row else RulesDocument()


async def save(s: AsyncSession, account_id: int, doc: RulesDocument) -> None:
    row = await s.get(RuleConfig, account_id)
    data = doc.model_dump(mode="json")
    if row is None:
        s.add(RuleConfig(account_id=account_id, document=data))
    else:
        row.document = data


# A rules document given with a new account (POST /api/accounts) is checked and stored by this module.
accounts_service.RulesHook.validate = RulesDocument.model_validate
accounts_service.RulesHook.save = save


async def unknown_places(s: AsyncSession, account_id: int, doc: RulesDocument) -> list[str]:
    """Pipelines and stages the document names that the mirror does not know (a typo, or a pipeline
    not yet backfilled): kept, since the mirror may learn them later, but said in the answer."""
    pipelines = set(await s.scalars(select(Pipeline.id).where(Pipeline.account_id == account_id)))
    stages = {
        f"{p}/{st}"
        for p, st in await s.execute(select(Stage.pipeline_id, Stage.id).where(Stage.account_id == account_id))
    }
    warnings = []
    for name, entry in doc.rules.items():
        named = [(f"rules.{name}.pipelines", key, key in pipelines) for key in entry.pipelines]
        named += [(f"rules.{name}.stages", key, key in stages) for key in entry.stages]
        named += [(f"rules.{name}.exclude.pipelines", key, key in pipelines) for key in entry.exclude.pipelines]
        named += [(f"rules.{name}.exclude.stages", key, key in stages) for key in entry.exclude.stages]
        for where, key, known in named:
            if not known:
                kind = "stage" if "/" in key else "pipeline"
                warnings.append(f"{where}: the CRM has no {kind} {key!r} that crmwatch knows of; kept as written")
    for name, milestone in doc.plans.milestones.items():
        for key in milestone.stages:
            if key not in stages:
                where = f"plans.milestones.{name}.stages"
                warnings.append(f"{where}: the CRM has no stage {key!r} that crmwatch knows of; kept as written")
    return warnings
