"""The CRM-neutral vocabulary: domain events every adapter produces, and the protocols
every CRM integration implements. app/ speaks only these words.

Ids are strings: amoCRM and Bitrix24 both use integers today, but the mirror must not care.
Times are aware UTC datetimes. A field left as None means "this event did not say", so
thin webhooks (ids only) update what they know and keep the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class StageKind(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class NoteKind(StrEnum):
    COMMON = "common"
    CALL_IN = "call_in"
    CALL_OUT = "call_out"
    SYSTEM = "system"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class StageInfo:
    id: str
    name: str
    sort: int
    kind: StageKind


@dataclass(frozen=True, slots=True)
class PipelineUpserted:
    id: str
    name: str
    sort: int
    stages: tuple[StageInfo, ...]
    is_archived: bool = False


@dataclass(frozen=True, slots=True)
class UserUpserted:
    id: str
    name: str | None = None
    email: str | None = None
    is_active: bool | None = None


@dataclass(frozen=True, slots=True)
class DealUpserted:
    id: str
    updated_at: datetime
    name: str | None = None
    pipeline_id: str | None = None
    stage_id: str | None = None
    # Won/lost/open when the adapter knows it from the stage id alone; else the mirror's stages decide.
    stage_kind: StageKind | None = None
    price: float | None = None
    responsible_user_id: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    # When the CRM says the deal entered stage_id (a status-change event); defaults to updated_at.
    stage_changed_at: datetime | None = None
    contact_ids: tuple[str, ...] | None = None
    # The deal's company (amoCRM: _embedded.companies; Bitrix24: COMPANY_ID); () none, None not said.
    company_ids: tuple[str, ...] | None = None
    # The deal's custom fields that have a value, by the CRM's field id (amoCRM: the numeric id;
    # Bitrix24: the original UF_CRM_… name), each as one JSON scalar (the first value of a multiple
    # field). None: not said (keep what the mirror has); {}: said, and none has a value. The mirror
    # keeps only the fields the account configured (app/mirror/fields.py).
    custom_fields: Mapping[str, Any] | None = None
    # A thin event (ids only): the worker fetches the full record when it can.
    is_thin: bool = False


@dataclass(frozen=True, slots=True)
class DealDeleted:
    id: str


@dataclass(frozen=True, slots=True)
class DealRestored:
    id: str


@dataclass(frozen=True, slots=True)
class StageEntered:
    """A deal moved into a stage at a known time (from the CRM's event log)."""

    deal_id: str
    stage_id: str
    pipeline_id: str | None
    at: datetime
    from_stage_id: str | None = None
    by_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaskUpserted:
    id: str
    updated_at: datetime
    deal_id: str | None = None  # None when the task is bound to a contact/company or nothing
    entity_type: str | None = None
    entity_id: str | None = None
    text: str | None = None
    type_id: str | None = None
    responsible_user_id: str | None = None
    due_at: datetime | None = None
    is_completed: bool | None = None
    result_text: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class TaskDeleted:
    id: str


@dataclass(frozen=True, slots=True)
class NoteAdded:
    id: str
    entity_type: str
    entity_id: str
    kind: NoteKind
    created_at: datetime
    deal_id: str | None = None
    text: str | None = None
    created_by: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContactUpserted:
    id: str
    updated_at: datetime
    name: str | None = None
    responsible_user_id: str | None = None
    phones: tuple[str, ...] | None = None  # E.164, already normalized


@dataclass(frozen=True, slots=True)
class ContactDeleted:
    id: str


@dataclass(frozen=True, slots=True)
class CompanyUpserted:
    id: str
    updated_at: datetime
    name: str | None = None
    responsible_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class CompanyDeleted:
    id: str


class CallDirection(StrEnum):
    IN = "in"
    OUT = "out"
    INTERNAL = "internal"


class CallStatus(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    BUSY = "busy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing a PBX (or a CRM's own telephony) said about one call. Events with the same
    (provider, call_id) merge into one call: a start event, an answer, the final summary.

    Numbers are E.164 already. `manager_ref` is the PBX's extension or login, mapped to a CRM
    user through the account's telephony settings; `manager_id` is set when the source already
    speaks in CRM user ids (a call note, Bitrix24's telephony). `is_final` marks the event that
    closes the call (Mango's summary, Zadarma's NOTIFY_END): only it decides the status.
    """

    provider: str
    call_id: str
    direction: CallDirection | None = None
    client_number: str | None = None
    line_number: str | None = None
    manager_ref: str | None = None
    manager_id: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    talk_seconds: int | None = None
    duration_seconds: int | None = None
    status: CallStatus | None = None
    recording_url: str | None = None
    is_final: bool = False
    # The provider's ordering of events within a call (Mango's seq): a lower one than seen is stale.
    seq: int | None = None
    # The card the source already tied the call to (a call note on a deal).
    deal_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordNamed:
    """An event that only names a record (Bitrix24 sends ids, never content): the inbox worker
    reads the record through CrmClient.fetch_named and applies what it reads. `kind` is the
    adapter's own word for the record ("deal", "task", …); app/ passes it through untouched."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class CredentialsIssued:
    """The CRM handed over credentials in a delivery (an app install): merged into the account's
    sealed credentials; `webhook_secret` becomes what later deliveries must carry."""

    credentials: Mapping[str, Any]
    external_id: str | None = None
    webhook_secret: str | None = None
    # What a stored delivery keeps of that secret instead (see CrmAdapter.scrub_webhook).
    webhook_secret_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownEntity:
    """Something the CRM sent that we do not model (yet). Kept in the inbox, ignored here."""

    kind: str


DomainEvent = (
    PipelineUpserted
    | UserUpserted
    | DealUpserted
    | DealDeleted
    | DealRestored
    | StageEntered
    | TaskUpserted
    | TaskDeleted
    | NoteAdded
    | ContactUpserted
    | ContactDeleted
    | CompanyUpserted
    | CompanyDeleted
    | CallEvent
    | RecordNamed
    | CredentialsIssued
    | UnknownEntity
)


@dataclass(frozen=True, slots=True)
class CrmIdentity:
    """What the CRM says about the account behind a token."""

    external_id: str
    name: str | None = None
    subdomain: str | None = None
    timezone: str | None = None
    country: str | None = None


class WebhookRejected(Exception):
    """The webhook is not for this account (or not from the CRM): 401, nothing stored."""


class WebhookMalformed(Exception):
    """The body cannot be a webhook of this CRM: 400, nothing stored."""


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """What ingest learns from a body before storing it (the cheap, synchronous part)."""

    external_account_id: str | None
    subdomain: str | None
    # A shared secret the body itself carries (Bitrix24's auth[application_token]); checked
    # against the account's saved one when the account has one.
    secret: str | None = None
    # The delivery may set the account's first secret (an app install on an account that has none yet).
    issues_secret: bool = False
    # A stored delivery (scrubbed) carries the secret's SHA-256 in its place.
    secret_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class ScrubbedWebhook:
    """A delivery as the inbox may keep it: `body` holds no secret the CRM sent; `sealed` holds
    those the later parse still needs (an install's OAuth pair), for the caller to encrypt."""

    body: bytes
    sealed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountConnection:
    """How an account of this CRM is connected, worked out from POST /api/accounts fields the
    generic schema does not know (CrmAdapter.connect)."""

    base_url: str  # stored and shown: never holds a secret
    auth_kind: str  # "token" | "oauth"
    credentials: dict[str, Any]  # sealed before storage
    webhook_secret: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class SyncSection:
    """One named stream of a backfill: its events come page by page."""

    name: str
    pages: AsyncIterator[list[DomainEvent]]


@runtime_checkable
class CrmClient(Protocol):
    """An authenticated API client for one account."""

    async def identity(self) -> CrmIdentity: ...

    def backfill(self, *, history_days: int, region: str, deal_fields: tuple[str, ...] = ()) -> list[SyncSection]:
        """The sections of a full read. `deal_fields`: the custom fields of deals the account keeps
        (a CRM whose lists name their fields must ask for them)."""
        ...

    async def fetch_deals(self, ids: list[str], *, region: str) -> list[DomainEvent]: ...

    async def fetch_named(self, refs: list[RecordNamed], *, region: str) -> list[DomainEvent]:
        """The current state of records an event only named; a record that no longer exists comes
        back as its deletion. Raises CrmError when it cannot tell (the event is retried)."""
        ...

    async def create_tasks(self, tasks: list[NewTask]) -> dict[str, str]:
        """Creates tasks in one request; returns request_id → the CRM's task id."""
        ...

    async def add_notes(self, notes: list[NewNote]) -> dict[str, str]:
        """Adds notes to deals in one request; returns request_id → the CRM's note id."""
        ...

    async def close_tasks(self, closures: list[TaskClosure]) -> None: ...

    async def completed_tasks(self, task_ids: list[str]) -> set[str]:
        """Which of these tasks (ids as create_tasks returned them) the CRM holds as completed: a
        close whose answer was lost is read back rather than written again."""
        ...

    async def find_marked(self, kind: str, deal_ids: list[str], markers: list[str]) -> dict[str, str]:
        """Reads back what a lost answer may have created: marker → CRM id, for tasks or notes
        on these deals whose text carries one of the markers."""
        ...

    async def find_marked_tasks_of(self, user_ids: list[str], markers: list[str]) -> dict[str, str]:
        """The same for tasks on no card (digests): marker → CRM id, among these users' tasks."""
        ...

    async def log_calls(self, calls: list[NewCall]) -> dict[str, str]:
        """Writes finished calls into the cards of the contacts with their numbers, in one request;
        returns request_id → the CRM's id for those it took (a number it knows no one with is dropped)."""
        ...

    async def find_calls(self, calls: list[NewCall]) -> dict[str, str]:
        """Reads back what a lost answer to log_calls may have written: request_id → the CRM's id,
        for those of these calls the CRM already holds (found by their `uniq`)."""
        ...

    async def search_phone(self, phone: str, *, region: str) -> PhoneLookup:
        """Contacts and companies carrying this E.164 number, and the deals linked to them: the
        fallback when the mirror knows no contact with the number."""
        ...

    async def subscribe(self, hook_url: str, public_url: str) -> None:
        """After an app install: subscribe to the CRM's events and bind what the app shows.
        A CRM whose subscriptions are set up by hand does nothing here."""
        ...

    def queued_deliveries(self) -> AsyncIterator[QueuedBatch]:
        """Deliveries the CRM queued for us (while we were down, or instead of posting them),
        batch by batch; each batch is acknowledged once stored. Empty for a CRM without a queue."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PhoneLookup:
    """What a CRM search by phone found: events to apply to the mirror (the contacts and their
    deals, in full), the contacts that carry the number, and every deal linked to the number
    through a contact or a company."""

    events: tuple[DomainEvent, ...] = ()
    contact_ids: tuple[str, ...] = ()
    deal_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
    dedup_key: str
    payload: str
    content_type: str


class QueuedBatch(Protocol):
    deliveries: list[QueuedDelivery]

    async def ack(self, dedup_keys: list[str] | None = None) -> None:
        """These deliveries (default: all) are durably stored: the CRM may forget them."""
        ...

    async def reject(self, dedup_keys: list[str]) -> None:
        """These could not be stored (malformed): the CRM keeps them aside as failed."""
        ...


class TokenSource(Protocol):
    """Hands a client a valid access token; owns refresh, persistence and its locking."""

    async def access_token(self) -> str: ...

    async def refresh_after_401(self, rejected: str) -> str | None:
        """A fresh token after the CRM refused `rejected`, or None when none can be had."""
        ...


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: datetime


class CardRejected(Exception):
    """Who opens the card is not confirmed; `code` tells the card which message to show:
    token_missing | token_invalid | token_expired | token_replayed | widget_not_configured."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class CardKeyMismatch(CardRejected):
    """Signed, but not with this key: another account's, or a forgery (the caller may try the next account)."""

    def __init__(self, detail: str = "the token's signature does not match the integration's secret key") -> None:
        super().__init__("token_invalid", detail)


class CardUnavailable(Exception):
    """The CRM could not be asked (network, 5xx): nothing is decided."""


@dataclass(frozen=True, slots=True)
class CardAccountHint:
    """Which connected account a card's credential claims to come from, before anything is verified."""

    external_id: str | None = None
    subdomain: str | None = None


@dataclass(frozen=True, slots=True)
class CardUser:
    """The CRM user who opened the card, as the CRM confirmed. A disposable token also has an id
    (`jti`) to be accepted once, until `expires_at`. `is_admin`: the CRM says this user administers
    the account (the dashboard shows them the whole team); False when unknown or not asked."""

    id: str
    name: str = ""
    jti: str | None = None
    expires_at: datetime | None = None
    is_admin: bool = False


class CardAuth(Protocol):
    """How a CRM's card proves who opens it: amoCRM's widget token, the Bitrix24 placement."""

    def hint(self, claim: str) -> CardAccountHint:
        """Unverified: the account a card's request names (amoCRM: the token itself; Bitrix24: the
        placement's member_id). Raises CardRejected for garbage."""
        ...

    async def verify(
        self,
        credential: str,
        *,
        base_url: str,
        secret: str | None = None,
        audience: str | None = None,
        transport: Any = None,
        ask_admin: bool = False,
    ) -> CardUser:
        """Confirms the credential for the account at `base_url` (with its secret and audience when
        the CRM signs tokens); raises CardRejected, or CardUnavailable when the CRM cannot be asked.
        `ask_admin`: also learn CardUser.is_admin where that costs the CRM another call (Bitrix24's
        `user.admin`); a CRM whose credential carries it (amoCRM's `is_admin` claim) always fills it."""
        ...


class CrmAdapter(Protocol):
    """Everything crmwatch knows about one CRM, behind one registry entry."""

    name: str  # "amocrm"
    card: CardAuth  # the in-card sign-in

    def check_webhook(self, body: bytes, content_type: str | None) -> ParsedWebhook:
        """Parse enough to authenticate, on the request path; raise WebhookMalformed for garbage."""
        ...

    def parse_webhook(self, body: bytes, *, region: str, received_at: datetime) -> list[DomainEvent]:
        """The full translation into domain events, run by the inbox worker."""
        ...

    def scrub_webhook(self, body: bytes) -> ScrubbedWebhook:
        """The checked delivery without its secrets, before it is stored. The stored body, with the
        `sealed` fields added back as form fields, must parse to the same events."""
        ...

    def subdomain_of(self, base_url: str) -> str | None: ...

    def hook_urls(self, public_url: str, key: str) -> dict[str, str]: ...

    def deal_url(self, base_url: str, deal_id: str) -> str:
        """The deal's card in the CRM, as a person opens it in the browser."""
        ...

    def make_client(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: Any,
        *,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
        timeout: float,
        transport: Any = None,
    ) -> CrmClient: ...

    async def oauth_exchange(
        self,
        base_url: str,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        code: str | None = None,
        refresh_token: str | None = None,
        transport: Any = None,
    ) -> TokenPair: ...

    def connect(self, base_url: str, fields: Mapping[str, Any]) -> AccountConnection | None:
        """The account's connection from the CRM's own creation fields (those beyond the generic
        access_token / oauth); None when this CRM has none and the generic fields apply.
        Raises ValueError with a message for the operator when the fields do not fit."""
        ...

    def make_limiter(self, settings: Any) -> Any:
        """A fresh per-account request limiter for this CRM's clients (one per account and process)."""
        ...


class CrmError(Exception):
    """The CRM could not be used for this call."""


class CrmAuthError(CrmError):
    """The CRM refused our credentials even after a refresh: the account needs attention."""


class CrmUnavailable(CrmError):
    """Retries exhausted on 429/5xx/timeouts: try again later, nothing is lost."""


class CrmRateLimited(CrmUnavailable):
    """The CRM asked us to slow down (429 or its own limit code) for longer than this call may wait:
    nothing of the last attempt ran, try again in `retry_after` seconds. Not a failure of the work."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CrmStopping(CrmUnavailable):
    """The process is stopping: a retry wait was cut short, nothing of the last attempt ran. The
    work goes back for the next process, not counted as a failure by callers that know this."""


class CrmAmbiguous(CrmUnavailable):
    """A write may or may not have reached the CRM (a timeout or 5xx after sending): read back
    before sending it again."""


class CrmRequestError(CrmError):
    """The CRM refused the request itself (a 4xx other than 401/429)."""


@dataclass(frozen=True, slots=True)
class NewTask:
    request_id: str
    deal_id: str | None  # None: a task on no card (a digest for one person)
    responsible_user_id: str | None
    text: str
    due_at: datetime
    type_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewNote:
    request_id: str
    deal_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TaskClosure:
    task_id: str
    result_text: str


@dataclass(frozen=True, slots=True)
class NewCall:
    request_id: str
    direction: CallDirection
    phone: str  # E.164
    status: CallStatus
    talk_seconds: int
    started_at: datetime
    uniq: str
    responsible_user_id: str | None = None
    recording_url: str | None = None
    source: str = "crmwatch"
    # The CRM contact the call was matched to, for CRMs that file a call on a given card.
    contact_id: str | None = None
