"""Applies CRM-neutral domain events to the mirror.

Every apply is idempotent and out-of-order safe: a change carries the CRM's modification
time, and one older than what the mirror holds is dropped. Deletions leave tombstones so a
late update cannot bring a deleted record back. The caller owns the transaction.

Each event type has one handler, listed in MirrorWriter._table. Another domain that keeps
records beside the mirror (calls) plugs in as a MirrorExtension: its own event types, and the
work it does once a batch is applied, in the same transaction. The mirror imports none of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from app.db import dialect_insert, utcnow
from integrations.base import (
    CompanyDeleted,
    CompanyUpserted,
    ContactDeleted,
    ContactUpserted,
    DealDeleted,
    DealRestored,
    DealUpserted,
    DomainEvent,
    NoteAdded,
    PipelineUpserted,
    StageEntered,
    StageKind,
    TaskDeleted,
    TaskUpserted,
    UserUpserted,
)

from . import fields
from .models import Company, Contact, ContactPhone, Deal, DealContact, Note, Pipeline, Stage, StageHistory, Task, User
from .text import fold

# Ids per IN list when prefetching (well under the drivers' bound-parameter limits).
PREFETCH_CHUNK = 500


@dataclass
class ApplyResult:
    touched_deals: set[str] = field(default_factory=set)
    thin_deals: set[str] = field(default_factory=set)
    ignored: int = 0
    # Contacts that gained phones or deals: records kept beside the mirror (calls without a
    # card) may match them now.
    linked_contacts: set[str] = field(default_factory=set)
    calls: set[int] = field(default_factory=set)  # calls this apply created or changed (the calls extension)
    # Contacts whose phones were said again (maybe changed) or went with the contact: the deals of
    # calls matched by number may see another verdict (app/calls/reach.py).
    rephoned_contacts: set[str] = field(default_factory=set)


def _updated_columns(model: type, apart: frozenset[str]) -> list[str]:
    """The attributes _even_out() writes on every changed row of a model: every column but the
    key, those the ORM sets itself on update and those written apart."""
    cached = _UPDATED_COLUMNS.get((model, apart))
    if cached is None:
        cached = _UPDATED_COLUMNS[(model, apart)] = [
            attr.key
            for attr in inspect(model).column_attrs
            if attr.key not in apart and not any(c.primary_key or c.onupdate is not None for c in attr.columns)
        ]
    return cached


_UPDATED_COLUMNS: dict[tuple[type, frozenset[str]], list[str]] = {}


def _even_out(session: Session, flush_context: Any, instances: Any) -> None:
    models: dict[type, frozenset[str]] = session.info["updates_together"]
    for obj in session.dirty:
        apart = models.get(type(obj))
        if apart is None or not session.is_modified(obj, include_collections=False):
            continue
        loaded = obj.__dict__
        for key in _updated_columns(type(obj), apart):
            if key in loaded:
                flag_modified(obj, key)


def update_together(session: AsyncSession, models: Sequence[type], apart: Sequence[str] = ()) -> None:
    """Makes each flush of the session write the changed rows of these models with the same
    columns. The ORM groups UPDATEs into one executemany only while consecutive rows (in key
    order) change the same set of columns: a batch mixing a deal's new stage, another's new name
    and a third's price otherwise costs one round trip per row (a third of a batch's deals and
    tasks, measured). Every column of a changed row is written instead, its unchanged ones with
    the values they have: the rows are the caller's, read (locked) in its transaction. `apart`:
    columns another transaction may write meanwhile (on rows read without a lock); they are
    written only when changed, as before."""
    sync = session.sync_session
    wanted = sync.info.get("updates_together")
    if wanted is None:
        wanted = sync.info["updates_together"] = {}
        event.listen(sync, "before_flush", _even_out)
    for model in models:
        wanted[model] = frozenset(apart)


# An event handler: applies one event, adding what it touched to the result.
Handler = Callable[[Any, ApplyResult], Awaitable[Any]]


class MirrorExtension(Protocol):
    """A domain with records beside the mirror (app/calls/service.CallsInMirror)."""

    def handlers(self) -> Mapping[type, Handler]:
        """The event types it applies, each with its handler."""
        ...

    async def arrange(self, events: list[DomainEvent]) -> list[DomainEvent]:
        """apply_batch(): may read its records ahead, and move its events that no other event of
        the batch can affect to the front; returns the events in the order to apply."""
        ...

    async def after_apply(self, result: ApplyResult) -> None:
        """Runs once the batch's events are applied, in the same transaction."""
        ...


def _is_stale(incoming: datetime | None, stored: datetime | None) -> bool:
    # Equal times win: amoCRM stamps whole seconds, and a second change in the same second
    # must still land. Applying the same content twice is harmless.
    return incoming is not None and stored is not None and incoming < stored


def _set(row: Any, **values: Any) -> None:
    """Assign only what the event said (None means "not said")."""
    for name, value in values.items():
        if value is not None:
            setattr(row, name, value)


class MirrorWriter:
    def __init__(self, session: AsyncSession, account_id: int, extensions: Sequence[MirrorExtension] = ()) -> None:
        self.s = session
        self.account_id = account_id
        self._stage_kinds: dict[tuple[str, str], str] | None = None
        self._users_seen: set[str] = set()
        self._kept_fields: frozenset[str] | None = None  # the deal fields the account keeps (fields.py)
        self._extensions = extensions
        # Rows read ahead by prefetch(), keyed (model, CRM id); None: known not to exist yet.
        self._rows: dict[tuple[type, str], Any] = {}
        self._table = self._handlers()
        for extension in extensions:
            self._table.update(extension.handlers())
        update_together(session, (Deal, Task, Note, Contact, Company))

    def _handlers(self) -> dict[type, Handler]:
        """Event type → handler. An event of a type not listed (UnknownEntity, a RecordNamed the
        caller did not resolve) is counted as ignored."""
        return {
            PipelineUpserted: self._on_PipelineUpserted,
            UserUpserted: self._on_UserUpserted,
            DealUpserted: self._on_DealUpserted,
            DealDeleted: self._on_DealDeleted,
            DealRestored: self._on_DealRestored,
            StageEntered: self._on_StageEntered,
            TaskUpserted: self._on_TaskUpserted,
            TaskDeleted: self._on_TaskDeleted,
            NoteAdded: self._on_NoteAdded,
            ContactUpserted: self._on_ContactUpserted,
            ContactDeleted: self._on_ContactDeleted,
            CompanyUpserted: self._on_CompanyUpserted,
            CompanyDeleted: self._on_CompanyDeleted,
        }

    def unhandled(self, events: list[DomainEvent]) -> int:
        """How many of these events apply() counts as ignored."""
        return sum(type(ev) not in self._table for ev in events)

    async def prefetch(self, events: Sequence[DomainEvent]) -> None:
        """Reads (and locks) every deal, task, note, contact and company the events name, one
        statement per type, before apply(): the handlers then find them in memory instead of a
        round trip each. The batch's rows are written back by the session's flush, which groups
        them into multi-row statements. Optional: apply() without it reads row by row."""
        ids: dict[type, set[str]] = {Deal: set(), Task: set(), Note: set(), Contact: set(), Company: set()}
        users: set[str] = set()
        for ev in events:
            if isinstance(ev, DealUpserted | DealDeleted | DealRestored):
                ids[Deal].add(ev.id)
            elif isinstance(ev, StageEntered):
                ids[Deal].add(ev.deal_id)
            elif isinstance(ev, TaskUpserted | TaskDeleted):
                ids[Task].add(ev.id)
            elif isinstance(ev, NoteAdded):
                ids[Note].add(ev.id)
            elif isinstance(ev, ContactUpserted | ContactDeleted):
                ids[Contact].add(ev.id)
            elif isinstance(ev, CompanyUpserted | CompanyDeleted):
                ids[Company].add(ev.id)
            user = getattr(ev, "responsible_user_id", None)
            if user is not None:
                users.add(user)
        for model, wanted in ids.items():
            todo = sorted(wanted - {i for m, i in self._rows if m is model})
            for start in range(0, len(todo), PREFETCH_CHUNK):
                chunk = todo[start : start + PREFETCH_CHUNK]
                query = select(model).where(model.account_id == self.account_id, model.id.in_(chunk))
                # Notes are never locked (a note is written once); the others are, as _load does.
                found = {r.id: r for r in await self.s.scalars(query if model is Note else query.with_for_update())}
                self._rows.update(((model, i), found.get(i)) for i in chunk)
        users -= self._users_seen
        if users:
            known = await self.s.scalars(select(User.id).where(User.account_id == self.account_id, User.id.in_(users)))
            self._users_seen.update(known)

    async def _load(self, model: type, row_id: str, *, lock: bool = True) -> Any:
        """The row, from what prefetch() read or made in this apply, else from the database."""
        key = (model, row_id)
        if key in self._rows:
            return self._rows[key]
        return await self.s.get(model, (self.account_id, row_id), with_for_update=True if lock else None)

    def _new(self, row: Any) -> Any:
        self.s.add(row)
        self._rows[(type(row), row.id)] = row
        return row

    async def apply_batch(self, events: list[DomainEvent]) -> ApplyResult:
        """apply() for a batch of events (the inbox worker's), with the records they name read
        ahead (prefetch) and the extensions' events arranged: the same result, in far fewer
        round trips."""
        await self.prefetch(events)
        for extension in self._extensions:
            events = await extension.arrange(events)
        return await self.apply(events)

    async def apply(self, events: list[DomainEvent]) -> ApplyResult:
        result = ApplyResult()
        for ev in events:
            handler = self._table.get(type(ev))
            if handler is None:
                result.ignored += 1
                continue
            await handler(ev, result)
        for extension in self._extensions:
            await extension.after_apply(result)
        return result

    # -- account structure ------------------------------------------------------------------------

    async def _on_PipelineUpserted(self, ev: PipelineUpserted, r: ApplyResult) -> None:
        await self._merge(Pipeline, (ev.id,), name=ev.name, sort=ev.sort, is_archived=ev.is_archived)
        await self.s.execute(
            delete(Stage).where(
                Stage.account_id == self.account_id,
                Stage.pipeline_id == ev.id,
                Stage.id.not_in([st.id for st in ev.stages]),
            )
        )
        for st in ev.stages:
            await self._merge(Stage, (ev.id, st.id), name=st.name, sort=st.sort, kind=st.kind.value)
        self._stage_kinds = None

    async def _on_UserUpserted(self, ev: UserUpserted, r: ApplyResult) -> None:
        await self._merge(User, (ev.id,), name=ev.name, email=ev.email, is_active=ev.is_active, synced_at=utcnow())

    async def _merge(self, model: type, key: tuple[str, ...], **values: Any) -> Any:
        if len(key) == 1:
            row = await self._load(model, key[0], lock=False)
        else:
            row = await self.s.get(model, (self.account_id, *key))
        if row is None:
            names = [c.name for c in model.__table__.primary_key.columns][1:]
            row = model(account_id=self.account_id, **dict(zip(names, key, strict=True)))
            if len(key) == 1:
                self._new(row)
            else:
                self.s.add(row)
        _set(row, **values)
        return row

    async def _known_user(self, user_id: str | None) -> None:
        """Users referenced before the user list was read get a placeholder, filled by the next sync."""
        if user_id is not None and user_id not in self._users_seen:
            self._users_seen.add(user_id)
            stmt = dialect_insert(self.s, User.__table__).values(account_id=self.account_id, id=user_id, is_active=True)
            await self.s.execute(stmt.on_conflict_do_nothing())

    # -- deals -------------------------------------------------------------------------------------

    async def _deal(self, deal_id: str) -> Deal | None:
        return await self._load(Deal, deal_id)

    async def _stage_kind(self, pipeline_id: str | None, stage_id: str | None) -> str:
        if self._stage_kinds is None:
            rows = await self.s.execute(
                select(Stage.pipeline_id, Stage.id, Stage.kind).where(Stage.account_id == self.account_id)
            )
            self._stage_kinds = {(p, s): k for p, s, k in rows}
        return self._stage_kinds.get((pipeline_id or "", stage_id or ""), StageKind.OPEN.value)

    async def _on_DealUpserted(self, ev: DealUpserted, r: ApplyResult) -> bool:
        deal = await self._deal(ev.id)
        is_new = deal is None
        if deal is None:
            deal = self._new(Deal(account_id=self.account_id, id=ev.id, is_deleted=False, is_closed=False))
        elif not ev.is_thin and _is_stale(ev.updated_at, deal.source_updated_at):
            return False
        new_stage = ev.stage_id is not None and ev.stage_id != deal.stage_id
        if new_stage:
            entered = ev.stage_changed_at or (ev.created_at if deal.stage_id is None else None) or ev.updated_at
            deal.stage_entered_at = entered
            deal.stage_entered_source = "event" if ev.stage_changed_at else "estimate"
            if ev.stage_changed_at is not None:
                self.s.add(
                    StageHistory(
                        account_id=self.account_id,
                        deal_id=ev.id,
                        pipeline_id=ev.pipeline_id,
                        stage_id=ev.stage_id,
                        from_stage_id=deal.stage_id,
                        entered_at=entered,
                    )
                )
        _set(
            deal,
            name=ev.name,
            pipeline_id=ev.pipeline_id,
            stage_id=ev.stage_id,
            price=ev.price,
            responsible_user_id=ev.responsible_user_id,
            created_at=ev.created_at,
        )
        if ev.custom_fields is not None or deal.custom_fields:
            if self._kept_fields is None:
                self._kept_fields = await fields.kept_for(self.s, self.account_id)
            merged = fields.merge(deal.custom_fields, ev.custom_fields, self._kept_fields, ev.updated_at)
            if merged != deal.custom_fields:
                deal.custom_fields = merged
        if not ev.is_thin:
            # A thin event's time is only when we received it; the full record read next
            # (with the CRM's own time) must still be able to land.
            deal.source_updated_at = ev.updated_at
        kind = ev.stage_kind.value if ev.stage_kind else await self._stage_kind(deal.pipeline_id, deal.stage_id)
        closed = kind != StageKind.OPEN.value
        if closed and not deal.is_closed:
            deal.closed_at = ev.closed_at or ev.stage_changed_at or ev.updated_at
        elif not closed:
            deal.closed_at = None
        deal.is_closed = closed
        if ev.is_thin:
            r.thin_deals.add(ev.id)
        if ev.company_ids is not None:
            deal.company_id = ev.company_ids[0] if ev.company_ids else None
        if ev.contact_ids is not None:
            if not is_new:
                await self.s.execute(
                    delete(DealContact).where(DealContact.account_id == self.account_id, DealContact.deal_id == ev.id)
                )
            for cid in dict.fromkeys(ev.contact_ids):
                self.s.add(DealContact(account_id=self.account_id, deal_id=ev.id, contact_id=cid))
            r.linked_contacts.update(ev.contact_ids)
        await self._known_user(ev.responsible_user_id)
        r.touched_deals.add(ev.id)
        return True

    async def _on_DealDeleted(self, ev: DealDeleted, r: ApplyResult) -> None:
        deal = await self._deal(ev.id)
        if deal is None:
            deal = self._new(Deal(account_id=self.account_id, id=ev.id, is_closed=False))
        now = utcnow()
        deal.is_deleted = True
        deal.deleted_at = now
        # The tombstone's time: an update stamped before the deletion cannot resurrect it.
        deal.source_updated_at = max(filter(None, [deal.source_updated_at, now]))
        r.touched_deals.add(ev.id)

    async def _on_DealRestored(self, ev: DealRestored, r: ApplyResult) -> None:
        deal = await self._deal(ev.id)
        if deal is not None:
            deal.is_deleted = False
            deal.deleted_at = None
            # Let the restore post's own data (stamped before now) apply right after this.
            deal.source_updated_at = None
        r.touched_deals.add(ev.id)

    async def _on_StageEntered(self, ev: StageEntered, r: ApplyResult) -> None:
        exists = await self.s.scalar(
            select(StageHistory.id)
            .where(
                StageHistory.account_id == self.account_id,
                StageHistory.deal_id == ev.deal_id,
                StageHistory.stage_id == ev.stage_id,
                StageHistory.entered_at == ev.at,
            )
            .limit(1)
        )
        if exists is None:
            self.s.add(
                StageHistory(
                    account_id=self.account_id,
                    deal_id=ev.deal_id,
                    pipeline_id=ev.pipeline_id,
                    stage_id=ev.stage_id,
                    from_stage_id=ev.from_stage_id,
                    entered_at=ev.at,
                    by_user_id=ev.by_user_id,
                )
            )
        deal = await self._deal(ev.deal_id)
        if deal is None or deal.stage_id != ev.stage_id:
            return
        # The latest recorded entry into the current stage is when the deal got there.
        if deal.stage_entered_source != "event" or deal.stage_entered_at is None or ev.at > deal.stage_entered_at:
            deal.stage_entered_at = ev.at
            deal.stage_entered_source = "event"
            r.touched_deals.add(ev.deal_id)

    # -- tasks and notes ---------------------------------------------------------------------------

    async def _on_TaskUpserted(self, ev: TaskUpserted, r: ApplyResult) -> bool:
        task = await self._load(Task, ev.id)
        if task is None:
            task = self._new(Task(account_id=self.account_id, id=ev.id, is_completed=False, is_deleted=False))
        elif task.is_deleted or _is_stale(ev.updated_at, task.source_updated_at):
            return False
        old_deal = task.deal_id
        if ev.due_at is not None and task.due_at is not None and ev.due_at != task.due_at:
            task.previous_due_at = task.due_at
            task.due_moved_at = ev.updated_at
        if ev.is_completed and not task.is_completed:
            task.completed_at = ev.updated_at
        elif ev.is_completed is False:
            task.completed_at = None
        _set(
            task,
            deal_id=ev.deal_id,
            entity_type=ev.entity_type,
            entity_id=ev.entity_id,
            text=ev.text,
            type_id=ev.type_id,
            responsible_user_id=ev.responsible_user_id,
            due_at=ev.due_at,
            is_completed=ev.is_completed,
            result_text=ev.result_text,
            created_at=ev.created_at,
            created_by=ev.created_by,
        )
        task.source_updated_at = ev.updated_at
        await self._known_user(ev.responsible_user_id)
        r.touched_deals.update(d for d in (old_deal, task.deal_id) if d)
        return True

    async def _on_TaskDeleted(self, ev: TaskDeleted, r: ApplyResult) -> None:
        task = await self._load(Task, ev.id)
        if task is None:
            task = self._new(Task(account_id=self.account_id, id=ev.id, is_completed=False))
        task.is_deleted = True
        if task.deal_id:
            r.touched_deals.add(task.deal_id)

    async def _on_NoteAdded(self, ev: NoteAdded, r: ApplyResult) -> None:
        note = await self._merge(
            Note,
            (ev.id,),
            entity_type=ev.entity_type,
            entity_id=ev.entity_id,
            deal_id=ev.deal_id,
            kind=ev.kind.value,
            text=ev.text,
            text_norm=fold(ev.text),
            created_by=ev.created_by,
            created_at=ev.created_at,
        )
        note.params = dict(ev.params)
        if ev.deal_id:
            r.touched_deals.add(ev.deal_id)

    # -- contacts ----------------------------------------------------------------------------------

    async def _on_ContactUpserted(self, ev: ContactUpserted, r: ApplyResult) -> bool:
        contact = await self._load(Contact, ev.id)
        is_new = contact is None
        if contact is None:
            contact = self._new(Contact(account_id=self.account_id, id=ev.id, is_deleted=False))
        elif contact.is_deleted or _is_stale(ev.updated_at, contact.source_updated_at):
            return False
        _set(contact, name=ev.name, responsible_user_id=ev.responsible_user_id)
        contact.source_updated_at = ev.updated_at
        if ev.phones is not None:
            if not is_new:  # a new contact has no phones to replace: skip the round trip
                await self.s.execute(
                    delete(ContactPhone).where(
                        ContactPhone.account_id == self.account_id, ContactPhone.contact_id == ev.id
                    )
                )
            for phone in ev.phones:
                self.s.add(ContactPhone(account_id=self.account_id, contact_id=ev.id, phone=phone))
            if ev.phones:
                r.linked_contacts.add(ev.id)
            if ev.phones or not is_new:
                r.rephoned_contacts.add(ev.id)
        return True

    async def _on_CompanyUpserted(self, ev: CompanyUpserted, r: ApplyResult) -> bool:
        company = await self._load(Company, ev.id)
        if company is None:
            company = self._new(Company(account_id=self.account_id, id=ev.id, is_deleted=False))
        elif company.is_deleted or _is_stale(ev.updated_at, company.source_updated_at):
            # A deleted company stays deleted (as a contact does): a read that raced the
            # deletion must not bring it back.
            return False
        _set(company, name=ev.name, responsible_user_id=ev.responsible_user_id)
        company.source_updated_at = ev.updated_at
        return True

    async def _on_CompanyDeleted(self, ev: CompanyDeleted, r: ApplyResult) -> None:
        company = await self._load(Company, ev.id)
        if company is None:
            company = self._new(Company(account_id=self.account_id, id=ev.id))
        company.is_deleted = True

    async def _on_ContactDeleted(self, ev: ContactDeleted, r: ApplyResult) -> None:
        contact = await self._load(Contact, ev.id)
        if contact is None:
            contact = self._new(Contact(account_id=self.account_id, id=ev.id))
        contact.is_deleted = True
        await self.s.execute(
            delete(ContactPhone).where(ContactPhone.account_id == self.account_id, ContactPhone.contact_id == ev.id)
        )
        r.rephoned_contacts.add(ev.id)
