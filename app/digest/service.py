"""The morning digest of one account for one local day: what it says, and how it is worded.

The day D is the morning the digest is for. "Yesterday" is the working day before D in the account's
business calendar (on a Monday, the Friday: a weekend has nothing to report). Today's plan is what
falls due on D. The pace is the month's as of D's local midnight, so the same D always says the
same thing. The figures come from the reports (app/reports) and the plans (app/plans); only the
two lists no report has yet (tasks due on a day, the oldest critical findings) are read here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import wording
from app.accounts.models import Account
from app.findings.models import Finding
from app.mirror.models import Deal, Pipeline, Task
from app.payments import report as payments_report
from app.plans import service as plans
from app.reports import repository as reports_repo
from app.reports import service as reports
from app.reports.periods import Period, local_midnight
from app.rules import config as rules_config

CRITICAL_SHOWN = 5
FACT_FIELDS = ("calls", "successful_calls", "cards_changed", "won", "lost", "findings_opened", "findings_resolved")


@dataclass
class Digest:
    account: str
    day: date
    fact_day: date
    facts: list[dict[str, Any]] = field(default_factory=list)  # per manager, FACT_FIELDS and name
    today: list[dict[str, Any]] = field(default_factory=list)  # per manager: tasks_due, meetings (or None)
    meetings_known: bool = False
    # The account names a payment date field: today's rows carry the payments expected today.
    payments_known: bool = False
    pace: dict[str, Any] = field(default_factory=dict)
    critical: list[dict[str, Any]] = field(default_factory=list)


def previous_working_day(cal: Any, day: date) -> date:
    prev = day - timedelta(days=1)
    for _ in range(31):
        if cal.is_working_day(prev):
            return prev
        prev -= timedelta(days=1)
    return day - timedelta(days=1)


async def build(s: AsyncSession, account: Account, day: date) -> Digest:
    doc = await rules_config.load(s, account.id)
    cal = doc.business_calendar(account.timezone)
    fact_day = previous_working_day(cal, day)
    period = Period(fact_day, fact_day, account.timezone)
    people = await reports_repo.users(s, account.id)
    rows: dict[str, dict[str, Any]] = {}

    def row(manager_id: str) -> dict[str, Any]:
        if manager_id not in rows:
            name = people.get(manager_id, (None, False))[0] or manager_id
            rows[manager_id] = {"manager_id": manager_id, "name": name, **dict.fromkeys(FACT_FIELDS, 0)}
        return rows[manager_id]

    for m, (_, active) in people.items():
        if active:
            row(m)
    for (m, _), v in (await reports.day_rows(s, account, period, reports.TEAM)).items():
        if m is None:
            continue
        r = row(m)
        for f in ("calls", "successful_calls", "cards_changed"):
            r[f] += v[f]
    for pipeline_id in await s.scalars(select(Pipeline.id).where(Pipeline.account_id == account.id)):
        for c in await reports_repo.closed(s, account.id, pipeline_id, period.start, period.end, None):
            if c.manager_id is not None:
                row(c.manager_id)[c.kind] += int(c.n)
    for m in list(rows):
        for f in await reports_repo.finding_days(s, account.id, account.timezone, period.start, period.end, (m,)):
            rows[m]["findings_opened"] += int(f.opened)
            rows[m]["findings_resolved"] += int(f.resolved)
    digest = Digest(account=account.name, day=day, fact_day=fact_day)
    digest.facts = sorted(rows.values(), key=lambda r: (r["name"].lower(), r["manager_id"]))

    # Today: open tasks due on D, and among them the meetings when a milestone names their task types.
    start, end = local_midnight(day, account.timezone), local_midnight(day + timedelta(days=1), account.timezone)
    meeting_types = doc.plans.milestones["meeting_held"].task_types if "meeting_held" in doc.plans.milestones else []
    digest.meetings_known = bool(meeting_types)
    is_meeting = Task.type_id.in_(meeting_types) if meeting_types else false()
    due = await s.execute(
        select(
            Task.responsible_user_id,
            func.count().label("tasks"),
            func.coalesce(func.sum(case((is_meeting, 1), else_=0)), 0).label("meetings"),
        )
        .where(
            Task.account_id == account.id,
            Task.is_completed.is_(False),
            Task.is_deleted.is_(False),
            Task.due_at >= start,
            Task.due_at < end,
        )
        .group_by(Task.responsible_user_id)
    )
    by_manager = {r.responsible_user_id: (int(r.tasks), int(r.meetings)) for r in due}
    expected: dict[str | None, dict[str, Any]] = {}
    if payments_report.Roles.of(account).date:
        digest.payments_known = True
        report = await payments_report.payments(s, account, day, None, 1)
        expected = {i["manager_id"]: i["today"] for i in report["items"]}
    for r in digest.facts:
        tasks, meetings = by_manager.get(r["manager_id"], (0, 0))
        pay = expected.get(r["manager_id"]) or {"count": 0, "amount": 0.0}
        digest.today.append(
            {
                "manager_id": r["manager_id"],
                "name": r["name"],
                "tasks_due": tasks,
                "meetings": meetings,
                "payments": pay["count"],
                "payments_amount": pay["amount"],
            }
        )

    digest.pace = await plans.pace(s, account, plans.current_month(start, account.timezone), start)

    found = await s.execute(
        select(Finding.id, Finding.rule, Finding.deal_id, Finding.manager_id, Finding.opened_at, Deal.name)
        .outerjoin(Deal, and_(Deal.account_id == Finding.account_id, Deal.id == Finding.deal_id))
        .where(
            Finding.account_id == account.id,
            Finding.status.in_(reports_repo.OPEN_FINDING),
            Finding.severity == "critical",
            Finding.opened_at < end,
        )
        .order_by(Finding.opened_at, Finding.id)
        .limit(CRITICAL_SHOWN)
    )
    for f in found:
        digest.critical.append(
            {
                "finding_id": f.id,
                "rule": f.rule,
                "deal_id": f.deal_id,
                "deal_name": f.name,
                "manager": (people.get(f.manager_id, (None, False))[0] or f.manager_id) if f.manager_id else None,
                "opened_at": f.opened_at,
                "url": reports_repo.card_url(account.crm, account.base_url, f.deal_id) if f.deal_id else None,
            }
        )
    return digest


# --- wording -----------------------------------------------------------------------------------------


def _pace_lines(d: Digest, lang: str) -> list[tuple[str, bool]]:
    """(line, behind) per manager's milestone."""
    w = wording.of(lang).DIGEST
    out = []
    for m in d.pace.get("managers", []):
        for r in m["rows"]:
            if r["target"] is None:
                continue
            line = w["pace_line"].format(
                name=m["name"],
                milestone=w["milestones"].get(r["milestone"], r["milestone"]),
                fact=_num(r["fact"]),
                target=_num(r["target"]),
                expected=_num(r["expected"]),
            )
            state = w["behind"].format(percent=r["behind_percent"]) if r["behind"] else w["on_track"]
            out.append((f"{line} — {state}", bool(r["behind"])))
    return out


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}".replace(",", " ") if isinstance(x, int) else f"{x:,.1f}".replace(",", " ")


def _when(d: Any, tz: str) -> str:
    return d.astimezone(ZoneInfo(tz)).strftime("%d.%m.%Y %H:%M") if d else "—"


def _finding_label(f: dict[str, Any], lang: str) -> str:
    title = wording.of(lang).RULE_TITLES.get(f["rule"], f["rule"])
    quoted = wording.of(lang).DIGEST["quoted"]
    what = quoted.format(name=f["deal_name"]) if f["deal_name"] else f"#{f['deal_id'] or f['finding_id']}"
    who = f" ({f['manager']})" if f["manager"] else ""
    return f"{title}: {what}{who}"


def title(d: Digest, lang: str) -> str:
    return wording.of(lang).DIGEST["title"].format(account=d.account, day=d.day.strftime("%d.%m.%Y"))


def _today_cell(r: dict[str, Any], column: str) -> str:
    if column == "payments" and r["payments"]:
        return f"{r['payments']} ({_num(r['payments_amount'])})"
    return str(r[column])


def render_html(d: Digest, lang: str, timezone: str) -> str:
    """A whole page: the preview, and the email's HTML part."""
    w = wording.of(lang).DIGEST
    e = html.escape
    title = w["title"].format(account=d.account, day=d.day.strftime("%d.%m.%Y"))
    parts = [
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{e(title)}</title></head><body>',
        f"<h1>{e(title)}</h1>",
        f"<h2>{e(w['fact'].format(day=d.fact_day.strftime('%d.%m.%Y')))}</h2>",
    ]
    if d.facts:
        head = "".join(f"<th>{e(w[f])}</th>" for f in FACT_FIELDS)
        parts.append(f'<table class="fact"><tr><th>{e(w["manager"])}</th>{head}</tr>')
        for r in d.facts:
            cells = "".join(f"<td>{r[f]}</td>" for f in FACT_FIELDS)
            parts.append(f'<tr data-manager="{e(r["manager_id"])}"><td>{e(r["name"])}</td>{cells}</tr>')
        total = "".join(f"<td>{sum(r[f] for r in d.facts)}</td>" for f in FACT_FIELDS)
        parts.append(f"<tr><th>{e(w['total'])}</th>{total}</tr></table>")
    else:
        parts.append(f"<p>{e(w['nothing'])}</p>")
    parts.append(f"<h2>{e(w['today'])}</h2>")
    cols = ["tasks_due", *(["meetings"] if d.meetings_known else []), *(["payments"] if d.payments_known else [])]
    parts.append(
        f'<table class="today"><tr><th>{e(w["manager"])}</th>' + "".join(f"<th>{e(w[c])}</th>" for c in cols) + "</tr>"
    )
    for r in d.today:
        cells = "".join(f"<td>{e(_today_cell(r, c))}</td>" for c in cols)
        parts.append(f'<tr data-manager="{e(r["manager_id"])}"><td>{e(r["name"])}</td>{cells}</tr>')
    parts.append("</table>")
    parts.append(f"<h2>{e(w['pace'].format(month=d.pace.get('month', '')))}</h2>")
    lines = _pace_lines(d, lang)
    if lines:
        parts.append(
            '<ul class="pace">'
            + "".join(f'<li class="{"behind" if b else "ok"}">{e(line)}</li>' for line, b in lines)
            + "</ul>"
        )
    else:
        parts.append(f"<p>{e(w['no_plan'])}</p>")
    parts.append(f"<h2>{e(w['critical'])}</h2>")
    if d.critical:
        items = []
        for f in d.critical:
            label = e(_finding_label(f, lang))
            link = f'<a href="{e(f["url"])}">{label}</a>' if f["url"] else label
            items.append(f"<li>{link}, {e(w['since'].format(at=_when(f['opened_at'], timezone)))}</li>")
        parts.append('<ol class="critical">' + "".join(items) + "</ol>")
    else:
        parts.append(f"<p>{e(w['no_critical'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_text(d: Digest, lang: str, timezone: str, *, telegram: bool = False) -> str:
    """Plain text (the CRM task, the email's text part), or Telegram's HTML subset (b, a) when asked."""
    w = wording.of(lang).DIGEST
    e = html.escape if telegram else (lambda x: x)

    def bold(x: str) -> str:
        return f"<b>{e(x)}</b>" if telegram else x

    out = [bold(w["title"].format(account=d.account, day=d.day.strftime("%d.%m.%Y"))), ""]
    out.append(bold(w["fact"].format(day=d.fact_day.strftime("%d.%m.%Y"))))
    for r in d.facts:
        figures = ", ".join(f"{w[f].lower()} {r[f]}" for f in FACT_FIELDS)
        out.append(e(f"• {r['name']}: {figures}"))
    if not d.facts:
        out.append(e(w["nothing"]))
    out += ["", bold(w["today"])]
    for r in d.today:
        line = f"• {r['name']}: {w['tasks_due'].lower()} {r['tasks_due']}"
        if d.meetings_known:
            line += f", {w['meetings'].lower()} {r['meetings']}"
        if d.payments_known:
            line += f", {w['payments'].lower()} {_today_cell(r, 'payments')}"
        out.append(e(line))
    out += ["", bold(w["pace"].format(month=d.pace.get("month", "")))]
    lines = _pace_lines(d, lang)
    out += [e(f"• {line}") for line, _ in lines] or [e(w["no_plan"])]
    out += ["", bold(w["critical"])]
    for i, f in enumerate(d.critical, 1):
        label = _finding_label(f, lang)
        since = w["since"].format(at=_when(f["opened_at"], timezone))
        if telegram and f["url"]:
            out.append(f'{i}. <a href="{html.escape(f["url"])}">{html.escape(label)}</a>, {html.escape(since)}')
        else:
            out.append(f"{i}. {label}, {since}" + (f"\n   {f['url']}" if f["url"] else ""))
    if not d.critical:
        out.append(e(w["no_critical"]))
    return "\n".join(out)


def language(account: Account, lang: str | None) -> str:
    return lang if lang in wording.LANGUAGES else ("ru" if account.language == "ru" else "en")


__all__ = ["Digest", "build", "language", "previous_working_day", "render_html", "render_text", "title"]
