"""The webhook mix of bench/apply.py, its seeded accounts, and the one-by-one reference.

Kept apart from the benchmark's orchestration so that a test (tests/bench/) can run the same
mix at a tiny size against the worker's batch path and the one-by-one path, on SQLite and on
PostgreSQL, and hold any faster apply to the same result.

Everything here is a pure function of (seed, now): two databases seeded with the same
arguments hold the same rows, the same account ids and keys, and the same findings.

Times are placed so that no rule's verdict changes in the minutes between two evaluations
of the same data: the accounts' calendar works around the clock (working minutes are wall
minutes), the mix's events lie between `now - 2 h - N s` and `now - 2 h`, due times are at
least two hours from `now`, and seeded stage entries and notes stay a day or more away from
the stuck-stage (3 days) and empty-comment (7 days) limits.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sweep import (
    DEAL_BASE,
    NOTE_BASE,
    NOTE_LONG,
    NOTE_SHORT,
    NOTE_STOCK,
    OPEN_STAGES,
    PIPELINE_ID,
    STAGES,
    TASK_BASE,
    USER_BASE,
)

import app.models_all  # noqa: F401  (registers every table)
from app.accounts.models import Account
from app.calls.models import Call, TelephonyConfig
from app.findings import evaluation
from app.findings.models import ACTIVE, Finding
from app.ingest import worker as inbox_worker
from app.ingest.models import InboxEvent
from app.mirror.models import Contact, ContactPhone, Deal, DealContact, Note, Pipeline, Stage, StageHistory, Task, User
from app.mirror.text import fold
from app.outbox.models import OutboxAction
from app.rules import config as rules_config
from app.runtime import Runtime
from integrations.phones import to_e164
from integrations.telephony.mango import call_summary, signed_form

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
# A port nothing listens on: the mix carries full records, so nothing needs reading from the CRM.
DEAD_CRM_URL = "http://127.0.0.1:9"
CONTACT_BASE = 60_000_000
EXTERNAL_ACCOUNT_BASE = 29_000_000
USERS = 20
LINE = "74951234567"
# The share of each kind of webhook in the mix (weights).
MIX = {
    "lead_update": 22,
    "lead_status": 14,
    "lead_add": 6,
    "task_add": 14,
    "task_move": 10,
    "task_complete": 10,
    "note": 14,
    "call": 10,
}
TASK_TEXTS = ["Позвонить клиенту", "Отправить КП", "Назначить встречу", "Уточнить потребность", "Выставить счёт"]
NOTES = NOTE_STOCK + NOTE_SHORT + NOTE_LONG * 3  # stock phrases and short remarks are what empty_comment flags
# The accounts' rules document: the default rules with a round-the-clock calendar (see above).
RULES_DOCUMENT = rules_config.RulesDocument(
    calendar=rules_config.CalendarIn(
        country=None, work_start=time(0, 0), work_end=time(23, 59), work_days=[1, 2, 3, 4, 5, 6, 7]
    )
)


# --------------------------------------------------------------------------- webhook bodies


def _fixture_pairs(name: str) -> list[tuple[str, str]]:
    """An amoCRM fixture's key=value lines, in wire order."""
    lines = (FIXTURES / "amocrm" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("=", 1)) for line in lines if line and not line.startswith("#")]  # type: ignore[misc]


_TEMPLATES = {
    name: _fixture_pairs(name)
    for name in (
        "lead_add",
        "lead_update",
        "lead_status",
        "task_add",
        "task_update_deadline",
        "task_complete",
        "lead_note_common",
    )
}


def amo_body(template: str, fields: dict[str, Any], account: dict[str, str]) -> str:
    """A fixture webhook with its entity's fields (keys after `…[0][`) and its account replaced."""
    out = []
    for key, value in _TEMPLATES[template]:
        if key.startswith("account["):
            value = account.get(key, value)
        else:
            leaf = key.split("[0][", 1)[1].rstrip("]").replace("][", ".") if "[0][" in key else key
            value = str(fields[leaf]) if leaf in fields else value
        out.append(quote(key, safe="") + "=" + quote(value, safe=""))
    return "&".join(out)


# --------------------------------------------------------------------------- seeded accounts


@dataclass
class _SeedTask:
    id: str
    deal_id: str
    text: str
    type_id: str
    responsible: str
    due: int  # unix seconds
    created: int


@dataclass
class SeededAccount:
    """What the mix generator needs to know about an account's mirror."""

    index: int
    key: str
    api_key: str
    api_salt: str
    deals: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → stage, created, responsible, phone
    open_tasks: dict[str, _SeedTask] = field(default_factory=dict)
    id: int | None = None

    @property
    def external_id(self) -> str:
        return str(EXTERNAL_ACCOUNT_BASE + self.index)

    def hook_account(self) -> dict[str, str]:
        sub = f"bench{self.index}"
        return {
            "account[subdomain]": sub,
            "account[id]": self.external_id,
            "account[_links][self]": f"https://{sub}.amocrm.ru",
        }


def _user(u: int) -> str:
    return str(USER_BASE + 1 + u)


def _extension(u: int) -> str:
    return str(101 + u)


def _phone(index: int, d: int) -> str:
    return f"7999{index:02d}{d:05d}"


def plan_accounts(accounts: int, deals: int, seed: int, now: datetime) -> tuple[list[SeededAccount], dict[str, list]]:
    """The accounts and the rows of their mirror, as (table name → rows); account_id filled later."""
    rng = random.Random(seed)
    now = now.replace(microsecond=0)

    def ago(**delta: float) -> datetime:  # whole seconds, as webhooks carry them
        return (now - timedelta(**delta)).replace(microsecond=0)

    plans: list[SeededAccount] = []
    rows: dict[str, list] = {
        name: []
        for name in (
            "users",
            "pipelines",
            "stages",
            "deals",
            "contacts",
            "contact_phones",
            "deal_contacts",
            "tasks",
            "notes",
        )
    }
    for index in range(accounts):
        acc = SeededAccount(
            index=index,
            key=f"apply{seed:x}k{index}{rng.getrandbits(64):016x}",
            api_key=f"bench-mango-key-{index}",
            api_salt=f"bench-mango-salt-{index}",
        )
        plans.append(acc)
        a = ("account", index)  # replaced by the account's id once it exists
        rows["users"] += [
            {
                "account_id": a,
                "id": _user(u),
                "name": f"Менеджер {u + 1}",
                "email": f"manager{u + 1}@example.com",
                "is_active": True,
                "synced_at": now,
            }
            for u in range(USERS)
        ]
        rows["pipelines"].append(
            {"account_id": a, "id": PIPELINE_ID, "name": "Продажи", "sort": 0, "is_archived": False}
        )
        rows["stages"] += [
            {"account_id": a, "pipeline_id": PIPELINE_ID, "id": sid, "name": name, "sort": 10 * (i + 1), "kind": kind}
            for i, (sid, name, kind) in enumerate(STAGES)
        ]
        for d in range(1, deals + 1):
            deal_id, contact_id = str(DEAL_BASE + d), str(CONTACT_BASE + d)
            # Stage entries stay a day or more away from stuck_stage's 3 days.
            days = rng.uniform(0.2, 2.0) if rng.random() < 0.7 else rng.uniform(4.0, 60.0)
            entered = ago(days=days)
            created = (entered - timedelta(days=rng.uniform(0, 30))).replace(microsecond=0)
            stage = OPEN_STAGES[min(len(OPEN_STAGES) - 1, int(rng.random() ** 2 * len(OPEN_STAGES)))][0]
            u = rng.randrange(USERS)
            phone = _phone(index, d)
            acc.deals[deal_id] = {
                "stage": stage,
                "created": int(created.timestamp()),
                "responsible": u,
                "phone": phone,
                "name": f"Сделка #{d}",
                "price": rng.randrange(10, 5000) * 100,
            }
            rows["deals"].append(
                {
                    "account_id": a,
                    "id": deal_id,
                    "name": f"Сделка #{d}",
                    "pipeline_id": PIPELINE_ID,
                    "stage_id": stage,
                    "stage_entered_at": entered,
                    "stage_entered_source": "event",
                    "price": float(acc.deals[deal_id]["price"]),
                    "responsible_user_id": _user(u),
                    "is_closed": False,
                    "is_deleted": False,
                    "created_at": created,
                    "closed_at": None,
                    "deleted_at": None,
                    "source_updated_at": entered,
                    "mirrored_at": now,
                }
            )
            rows["contacts"].append(
                {
                    "account_id": a,
                    "id": contact_id,
                    "name": f"Клиент {d}",
                    "responsible_user_id": _user(u),
                    "is_deleted": False,
                    "source_updated_at": created,
                }
            )
            rows["contact_phones"].append({"account_id": a, "contact_id": contact_id, "phone": to_e164(phone)})
            rows["deal_contacts"].append({"account_id": a, "deal_id": deal_id, "contact_id": contact_id})
            for k in (1, 2):
                task_id = str(TASK_BASE + 10 * d + k)
                # Every tenth deal has only done tasks (deal_without_task); elsewhere the first is open.
                done = k == 2 or d % 10 == 0
                if done:
                    due = ago(days=rng.uniform(1, 20))
                elif rng.random() < 0.15:  # overdue, well past due
                    due = ago(hours=rng.uniform(2, 240))
                else:
                    due = ago(hours=-rng.uniform(2, 240))
                made = (min(due, now) - timedelta(days=rng.uniform(1, 10))).replace(microsecond=0)
                text, type_id = rng.choice(TASK_TEXTS), rng.choice(("1", "2"))
                rows["tasks"].append(
                    {
                        "account_id": a,
                        "id": task_id,
                        "deal_id": deal_id,
                        "entity_type": "deal",
                        "entity_id": deal_id,
                        "text": text,
                        "type_id": type_id,
                        "responsible_user_id": _user(u),
                        "due_at": due,
                        "previous_due_at": None,
                        "due_moved_at": None,
                        "is_completed": done,
                        "completed_at": due if done else None,
                        "result_text": "Выполнено" if done else None,
                        "is_deleted": False,
                        "created_at": made,
                        "created_by": _user(u),
                        "source_updated_at": due if done else made,
                    }
                )
                if not done:
                    acc.open_tasks[task_id] = _SeedTask(
                        task_id, deal_id, text, type_id, _user(u), int(due.timestamp()), int(made.timestamp())
                    )
            if rng.random() < 0.5:
                # Notes a day or more away from empty_comment's 7-day look-back.
                days = rng.uniform(1, 5) if rng.random() < 0.5 else rng.uniform(9, 14)
                text, _ = rng.choice(NOTES)
                rows["notes"].append(
                    {
                        "account_id": a,
                        "id": str(NOTE_BASE + d),
                        "entity_type": "deal",
                        "entity_id": deal_id,
                        "deal_id": deal_id,
                        "kind": "common",
                        "text": text,
                        "text_norm": fold(text),
                        "created_by": _user(u),
                        "created_at": ago(days=days),
                        "params": {},
                    }
                )
    return plans, rows


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        User.__table__,
        Pipeline.__table__,
        Stage.__table__,
        Deal.__table__,
        Contact.__table__,
        ContactPhone.__table__,
        DealContact.__table__,
        Task.__table__,
        Note.__table__,
    )
}  # type: ignore[misc]


async def seed(rt: Runtime, accounts: int, deals: int, seed_value: int, now: datetime) -> list[SeededAccount]:
    """Creates the accounts (amoCRM behind a dead URL, Mango connected, round-the-clock calendar),
    their mirrors, and their findings after one full evaluation at `now`. The outbox rows that
    evaluation enqueues are marked cancelled: the CRM got them before the burst began."""
    plans, rows = plan_accounts(accounts, deals, seed_value, now)
    async with rt.sessions() as s, s.begin():
        for acc in plans:
            account = Account(
                name=f"apply benchmark {acc.index}",
                crm="amocrm",
                base_url=DEAD_CRM_URL,
                key=acc.key,
                timezone="Europe/Moscow",
                region="RU",
                language="ru",
                auth_kind="token",
                credentials=rt.box.seal({"access_token": "bench"}),
                credentials_version=1,
                status="active",
                sync_state="done",
                sync_counts={},
                sync_finished_at=now,
                created_at=now,
                updated_at=now,
            )
            s.add(account)
            await s.flush()
            acc.id = account.id
            s.add(
                TelephonyConfig(
                    account_id=account.id,
                    provider="mango",
                    credentials=rt.box.seal({"api_key": acc.api_key, "api_salt": acc.api_salt}),
                    extensions={_extension(u): _user(u) for u in range(USERS)},
                    log_calls=False,
                )
            )
            await rules_config.save(s, account.id, RULES_DOCUMENT)
        ids = {("account", acc.index): acc.id for acc in plans}
        for name, table_rows in rows.items():
            for chunk in _chunks(table_rows, 5000):
                await s.execute(insert(TABLES[name]), [{**r, "account_id": ids[r["account_id"]]} for r in chunk])
    if rt.engine.dialect.name == "postgresql":
        # Statistics, as autovacuum keeps them on any database that has lived a little: without
        # them the planner takes the freshly bulk-loaded tables for empty, and a lookup such as
        # a call's contact by number walks every row.
        async with rt.engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
    for acc in plans:
        async with rt.sessions() as s, s.begin():
            await evaluation.evaluate(s, acc.id, now=now)
    async with rt.sessions() as s, s.begin():
        await s.execute(update(OutboxAction).values(status="cancelled"))
        # No scheduled sweep during the run: what is measured is the inbox and its re-evaluation.
        await s.execute(update(Account).values(last_sweep_at=now, next_sweep_at=now + timedelta(days=1)))
    return plans


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- the mix


@dataclass(frozen=True)
class Hook:
    path: str  # under the server's root, with the account's key
    body: str  # form-encoded, ASCII


def build_mix(plans: list[SeededAccount], events: int, seed_value: int, now: datetime) -> list[Hook]:
    """`events` webhooks over the accounts, as amoCRM and Mango Office would post them.

    Each carries a distinct source time (one second apart, ending two hours before `now`), so
    every body is distinct and a later event of a record is also the newer one."""
    rng = random.Random(seed_value + 1)
    unix_now = int(now.timestamp())
    start = unix_now - 2 * 3600 - events
    kinds, weights = list(MIX), list(MIX.values())
    # Accounts are not equally busy: weights 1..A.
    account_weights = [acc.index + 1 for acc in plans]
    counters = {acc.index: {"deal": 0, "task": 0, "note": 0, "call": 0} for acc in plans}
    open_deals = {acc.index: list(acc.deals) for acc in plans}
    seeded = len(plans[0].deals)
    mix: list[Hook] = []
    for i in range(events):
        ts = start + i
        acc = rng.choices(plans, account_weights)[0]
        kind = rng.choices(kinds, weights)[0]
        if kind in ("task_move", "task_complete") and not acc.open_tasks:
            kind = "task_add"
        n = counters[acc.index]
        if kind == "call":
            # A client the mirror knows (a seeded deal's contact), so no CRM look-up follows.
            mix.append(_call(acc, acc.deals[str(DEAL_BASE + rng.randrange(1, seeded + 1))], ts, n, rng))
            continue
        deal_id = _open_deal(acc, open_deals[acc.index], rng)
        deal = acc.deals[deal_id]
        if kind in ("lead_update", "lead_status", "lead_add"):
            if kind == "lead_add":
                n["deal"] += 1
                deal_id = str(DEAL_BASE + 500_000 + n["deal"])
                deal = acc.deals[deal_id] = {
                    "stage": OPEN_STAGES[0][0],
                    "created": ts,
                    "responsible": rng.randrange(USERS),
                    "phone": None,
                    "name": f"Заявка с сайта #{n['deal']}",
                    "price": 0,
                }
                open_deals[acc.index].append(deal_id)
            old_stage = deal["stage"]
            if kind == "lead_update":
                deal["price"] = rng.randrange(10, 5000) * 100
                if rng.random() < 0.2:
                    deal["responsible"] = rng.randrange(USERS)
            elif kind == "lead_status":
                roll = rng.random()
                if roll < 0.06:
                    deal["stage"] = "142"
                elif roll < 0.1:
                    deal["stage"] = "143"
                else:
                    open_ids = [s[0] for s in OPEN_STAGES]
                    deal["stage"] = (
                        open_ids[min(len(open_ids) - 1, open_ids.index(old_stage) + 1)]
                        if old_stage in open_ids
                        else open_ids[0]
                    )
            fields = {
                "id": deal_id,
                "name": deal["name"],
                "status_id": deal["stage"],
                "price": deal["price"],
                "responsible_user_id": _user(deal["responsible"]),
                "last_modified": ts,
                "updated_at": ts,
                "modified_user_id": _user(deal["responsible"]),
                "created_user_id": _user(deal["responsible"]),
                "date_create": deal["created"],
                "created_at": deal["created"],
                "pipeline_id": PIPELINE_ID,
                "old_status_id": old_stage,
                "old_pipeline_id": PIPELINE_ID,
                "account_id": acc.external_id,
            }
            template = {"lead_update": "lead_update", "lead_status": "lead_status", "lead_add": "lead_add"}[kind]
            mix.append(Hook(f"/hooks/amocrm/{acc.key}", amo_body(template, fields, acc.hook_account())))
            continue
        if kind == "note":
            n["note"] += 1
            text, _ = rng.choice(NOTES)
            fields = {
                "note.id": NOTE_BASE + 500_000 + n["note"],
                "note.element_id": deal_id,
                "note.text": text,
                "note.created_by": _user(deal["responsible"]),
                "note.date_create": ts,
                "note.last_modified": ts,
                "note.responsible_user_id": _user(deal["responsible"]),
                "note.account_id": acc.external_id,
            }
            mix.append(Hook(f"/hooks/amocrm/{acc.key}", amo_body("lead_note_common", fields, acc.hook_account())))
            continue
        if kind == "task_add":
            n["task"] += 1
            task = _SeedTask(
                str(TASK_BASE + 5_000_000 + n["task"]),
                deal_id,
                rng.choice(TASK_TEXTS),
                rng.choice(("1", "2")),
                _user(deal["responsible"]),
                unix_now + rng.randrange(2 * 3600, 240 * 3600)
                if rng.random() < 0.85
                else unix_now - rng.randrange(2 * 3600, 240 * 3600),
                ts,
            )
            acc.open_tasks[task.id] = task
            template, status = "task_add", "0"
        else:
            task = acc.open_tasks[rng.choice(sorted(acc.open_tasks))]
            if kind == "task_move":
                # Moved later by one to three days (task_rescheduled_without_contact's kind of move).
                task.due = max(task.due, unix_now + 2 * 3600) + rng.randrange(3600, 3 * 86400)
                template, status = "task_update_deadline", "0"
            else:
                del acc.open_tasks[task.id]
                template, status = "task_complete", "1"
        fields = {
            "id": task.id,
            "element_id": task.deal_id,
            "element_type": "2",
            "task_type": task.type_id,
            "date_create": task.created,
            "created_user_id": task.responsible,
            "last_modified": ts,
            "text": task.text,
            "responsible_user_id": task.responsible,
            "complete_till": task.due,
            "status": status,
            "account_id": acc.external_id,
        }
        mix.append(Hook(f"/hooks/amocrm/{acc.key}", amo_body(template, fields, acc.hook_account())))
    return mix


def _open_deal(acc: SeededAccount, candidates: list[str], rng: random.Random) -> str:
    """A random deal that is still open (closed ones leave the list when drawn)."""
    while True:
        i = rng.randrange(len(candidates))
        if acc.deals[candidates[i]]["stage"] not in ("142", "143"):
            return candidates[i]
        candidates[i] = candidates[-1]
        candidates.pop()


def _call(acc: SeededAccount, deal: dict[str, Any], ts: int, n: dict[str, int], rng: random.Random) -> Hook:
    """A Mango call summary with the deal's client: outbound and answered, or inbound and missed."""
    n["call"] += 1
    answered = rng.random() < 0.6
    talk = rng.randrange(20, 400) if answered else 0
    data = call_summary(
        f"YmVuY2g{acc.index}-{n['call']}",
        inbound=not answered,
        extension=_extension(deal["responsible"]),
        domain=f"bench{acc.index}.mangosip.ru",
        client=deal["phone"] or _phone(acc.index, 0),
        line=LINE,
        start=ts,
        talk=talk,
    )
    return Hook(f"/hooks/telephony/mango/{acc.key}/events/summary", signed_form(acc.api_key, acc.api_salt, data))


# --------------------------------------------------------------------------- one by one, and the comparison

_INBOX_COPY = ("id", "account_id", "source", "dedup_key", "content_type", "payload", "received_at")
# On PostgreSQL the reference refreshes the inbox's statistics this often (autovacuum may be off):
# without them the claim query walks every row already done to find the pending one.
ANALYZE_EVERY = 500


async def replay_one_by_one(source: Runtime, rt: Runtime) -> int:
    """The reference: the source's inbox rows, as received, fed to the target one at a time,
    each applied by the worker in a batch of one, with its own re-evaluation, before the next
    arrives. Returns how many rows were applied."""
    columns = [InboxEvent.__table__.c[name] for name in _INBOX_COPY]
    async with source.reads() as s:
        rows = [dict(r._mapping) for r in await s.execute(select(*columns).order_by(InboxEvent.id))]
    applied = 0
    for n, row in enumerate(rows):
        async with rt.sessions() as s, s.begin():
            await s.execute(
                insert(InboxEvent.__table__).values(
                    **row, status="pending", attempts=0, next_attempt_at=row["received_at"]
                )
            )
            if n % ANALYZE_EVERY == 0 and rt.engine.dialect.name == "postgresql":
                await s.execute(text("ANALYZE inbox_events"))
        applied += await inbox_worker.process_batch(rt, 1)
    return applied


# What is compared: the mirror the mix writes to and the active findings. Left out: surrogate
# ids and the times at which this process wrote (they differ between any two runs).
COMPARED: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "deals": (Deal.__table__, ("account_id", "id"), ("mirrored_at",)),
    "tasks": (Task.__table__, ("account_id", "id"), ()),
    "notes": (Note.__table__, ("account_id", "id"), ()),
    "calls": (
        Call.__table__,
        ("account_id", "provider", "provider_call_id"),
        ("id", "created_at", "updated_at", "matched_at", "crm_searched_at"),
    ),
    "stage_history": (StageHistory.__table__, ("account_id", "deal_id", "entered_at", "stage_id"), ("id",)),
    "users": (User.__table__, ("account_id", "id"), ("synced_at",)),
    "active findings": (
        Finding.__table__,
        ("account_id", "rule", "entity_type", "entity_id"),
        ("id", "opened_at", "resolved_at", "created_at", "updated_at", "times_opened"),
    ),
}


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, float):
        return round(value, 6)
    return value


async def snapshot(s: AsyncSession) -> dict[str, dict[tuple, tuple]]:
    """Every compared table as {key: the other compared columns}."""
    out: dict[str, dict[tuple, tuple]] = {}
    # A call's finding names the call by its surrogate id, which depends on the order in which
    # calls of different accounts were first written (parallel by account, it is arbitrary):
    # compare it by the call's own key instead.
    call_keys = {
        str(r.id): f"{r.provider}:{r.provider_call_id}"
        for r in await s.execute(select(Call.id, Call.provider, Call.provider_call_id))
    }
    for label, (table, key, left_out) in COMPARED.items():
        cols = [c for c in table.c if c.name not in left_out]
        query = select(*cols)
        if table is Finding.__table__:
            query = query.where(Finding.status.in_(ACTIVE))
        rows = {}
        for r in await s.execute(query):
            m = dict(r._mapping)
            if table is Finding.__table__ and m["entity_type"] == "call":
                m["entity_id"] = call_keys.get(m["entity_id"], m["entity_id"])
            rows[tuple(_normal(m[k]) for k in key)] = tuple(
                (c.name, _normal(m[c.name])) for c in cols if c.name not in key
            )
        out[label] = rows
    return out


def differences(batch: dict[str, dict[tuple, tuple]], reference: dict[str, dict[tuple, tuple]]) -> dict[str, list[str]]:
    """Per table, a description of each row that differs (empty lists: equal)."""
    out: dict[str, list[str]] = {}
    for label in COMPARED:
        a, b = batch[label], reference[label]
        diffs = []
        for key in sorted(a.keys() | b.keys(), key=repr):
            if key not in b:
                diffs.append(f"{key}: only in the batch run")
            elif key not in a:
                diffs.append(f"{key}: only one by one")
            elif a[key] != b[key]:
                changed = [
                    f"{name}={va!r} vs {vb!r}" for (name, va), (_, vb) in zip(a[key], b[key], strict=True) if va != vb
                ]
                diffs.append(f"{key}: " + ", ".join(changed))
        out[label] = diffs
    return out


async def inbox_counts(s: AsyncSession) -> dict[str, int]:
    return {
        status: int(n)
        for status, n in await s.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status))
    }
