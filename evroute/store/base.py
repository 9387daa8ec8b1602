"""The store seam: what the engine, the CLI and the ingress ask of a store, and nothing more.

Two halves. :class:`EventStore` is synchronous (commands, ``status``, ``events show``,
retention, ``publish``). :class:`Deliveries` is the worker's asyncio side, taken from
``store.deliveries()``. Every method is phrased so both stores can fill it:

=================  =====================================  ==========================================
concept            SQLite (one file)                      NATS JetStream (a cluster)
=================  =====================================  ==========================================
position           cursor row: highest seq finished       durable consumer ``evroute-<route>``; seq
                   (watermark, committed in batches)      = stream sequence, acks move the floor
attempt            retry row's count                      the message's delivery count
retry at a time    retry row due then (the retrier)       NAK with delay ``due_at - now``
dead letter        ``dead_letters`` row                   record in ``EVROUTE_DLQ``, then TERM
presence           the lease row (one worker)             heartbeat in KV ``EVROUTE_WORKERS`` (many)
routes             the routes file                        the file kept in KV ``EVROUTE_ROUTES``
=================  =====================================  ==========================================

Values are frozen dataclasses (the two on ``publish``'s path live in
:mod:`evroute.store.records`, so a single publish does not define the rest); ``token`` is the store's own handle on a read event (a
JetStream message), None for SQLite. Ordering and dedup belong to the store; filters,
policies, breakers and the delivery itself stay above the seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from evroute.cloudevent import CloudEvent
from evroute.store.records import AppendResult, RouteStart, StoredEvent


@dataclass(frozen=True, slots=True)
class Cursor:
    """A route's position and the counters the worker commits with it."""

    route: str
    broker: str
    position: int  # every event of the broker with seq <= position is finished for the route
    epoch: int  # moves when a user moves the position (reset): the worker re-reads
    created_at: float
    updated_at: float
    delivered: int
    failed: int
    last_error: str | None
    last_error_at: float | None
    in_flight: int
    breaker: str


@dataclass(slots=True)
class Progress:
    """What the worker reports at a batched commit (counters are increments)."""

    route: str
    position: int
    epoch: int
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    in_flight: int = 0
    breaker: str = "closed"


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt to make again at ``due_at`` (SQLite: a row; JetStream: a NAK with that delay)."""

    route: str
    seq: int  # negative: a replayed dead letter with no log event (-dlq id)
    attempt: int  # attempts already made
    due_at: float
    first_failed_at: float | None
    last_status: int | None
    last_error: str | None
    dlq_id: int | None  # set for a dead-letter replay


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    route: str
    broker: str
    seq: int | None
    event: CloudEvent
    attempts: int
    status: int | None
    reason: str
    error: str | None
    body: bytes | None
    first_failed_at: float | None
    dead_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    route: str
    broker: str
    seq: int | None
    event: CloudEvent
    attempts: int
    status: int | None
    reason: str
    error: str | None
    body: bytes | None
    first_failed_at: float | None
    dead_at: float
    replayed_at: float | None
    dls_outcome: str | None


@dataclass(frozen=True, slots=True)
class Presence:
    """A live worker: SQLite's lease holder, or one JetStream heartbeat."""

    holder: str
    pid: int
    host: str
    since: float
    heartbeat: float
    counters: Mapping[str, int] = field(default_factory=dict)
    alive: bool = True  # False: the last one known, whose heartbeat is too old (SQLite's lease)


@dataclass(frozen=True, slots=True)
class RoutesDoc:
    """The routes file as the store keeps it; ``revision`` guards a compare-and-set write."""

    text: str
    revision: int


def starts(routes: Iterable[Any]) -> list[RouteStart]:
    """(name, broker, start) of routes (anything with those attributes, e.g. a RouteSet's)."""
    return [RouteStart(r.name, r.broker, r.start) for r in routes]


class EventStore(Protocol):
    url: str
    kind: str  # "sqlite" | "nats": named when a command is refused on this store
    exclusive: bool  # True: one worker at a time (SQLite lease); False: any number share routes

    # the log
    def append(self, broker: str, events: Sequence[CloudEvent], now: float | None = None) -> AppendResult: ...
    def append_all(
        self, broker: str, chunks: Iterable[Sequence[CloudEvent]], now: float | None = None
    ) -> AppendResult:
        """Store every chunk or, when the iterable raises, none (the exception propagates)."""
        ...

    def event(self, seq: int) -> StoredEvent | None: ...
    def find(self, event_id: str, broker: str | None = None) -> list[StoredEvent]: ...
    def events(
        self, broker: str | None = None, type: str | None = None, limit: int = 20
    ) -> list[StoredEvent]: ...
    def lag(self, broker: str, position: int) -> int: ...

    # positions
    def ensure_routes(self, routes: Sequence[RouteStart], now: float | None = None) -> list[str]: ...
    def cursor(self, route: str) -> Cursor | None: ...
    def cursors(self) -> dict[str, Cursor]: ...
    def reset(self, route: str, to: str, now: float | None = None, *, drop_retries: bool = False) -> int:
        """Move to earliest | latest | SEQ | RFC 3339 time; returns the new position.
        Retries already scheduled are kept unless ``drop_retries`` (replays always stay)."""
        ...

    def forget(self, route: str) -> None:
        """Drop a route's position, retries and dead letters (``subscribe remove --purge``)."""
        ...

    # retries waiting (status, events show)
    def retry_state(self, route: str, seq: int) -> Retry | None: ...
    def scheduled(self, route: str) -> int:
        """Retries of log events ``route`` has waiting (dead-letter replays not counted)."""
        ...

    # the recent delivery outcomes (``evroute tail``, the console): SQLite's ring table, or
    # stream EVROUTE_OUTCOMES on JetStream; both keep the newest ~2,000
    def last_outcome(self) -> int:
        """The newest outcome's ``n`` (0 when none): a follower starts after it."""
        ...

    def recent_outcomes(self, after: int, limit: int = 1000) -> list[Any]:
        """Outcomes (``store.outcomes.Outcome``) with ``n > after``, oldest first."""
        ...

    def changed(self) -> int:
        """A number that moves when another process wrote (SQLite: data_version; JetStream:
        the newest outcome), for a reader's cheap wake-up check."""
        ...

    def attempts_of(self, seq: int) -> list[Any]:
        """The attempt history of one event, every route (``events show``)."""
        ...

    def retry_summary(self, routes: Sequence[str] | None = None) -> dict[str, tuple[int, float | None]]:
        """route -> (retries waiting, next due), of ``routes`` (None: every route with any);
        delayed events waiting for their first delivery are not retries (see :meth:`delayed`)."""
        ...

    def delayed(self, routes: Sequence[str]) -> dict[str, int]:
        """route -> delayed events (``evroutedeliverat``) on the schedule for their first delivery."""
        ...

    # what the worker says of a route's pace (throttled, a consumer group's endpoints)
    def pace(self, route: str) -> Any: ...
    def put_pace(self, paces: Sequence[Any]) -> None: ...

    # dead letters
    def dead_letters(self, route: str | None = None, limit: int | None = None) -> list[DeadLetter]: ...
    def dead_letter(self, dlq_id: int) -> DeadLetter: ...
    def dead_letters_of(self, seq: int | None = None, event_id: str | None = None) -> list[DeadLetter]: ...
    def dead_letter_counts(self, routes: Sequence[str] | None = None) -> dict[str, int]: ...
    def replay(self, ids: Iterable[int], now: float | None = None) -> int: ...
    def purge(self, route: str | None = None, before: float | None = None) -> int: ...

    # the routes: the file (SQLite) or the file kept in KV EVROUTE_ROUTES (JetStream)
    def routes(self, path: str) -> RoutesDoc | None: ...
    def put_routes(self, path: str, text: str, revision: int | None) -> int:
        """Store ``text`` if the revision is still ``revision`` (None: any); InvalidInput if not."""
        ...

    # workers, retention, housekeeping
    def workers(self, now: float) -> list[Presence]:
        """Live workers; an exclusive store also returns its last, dead one (``alive`` False)."""
        ...

    def collect(
        self,
        routes: Sequence[RouteStart],
        retention: float,
        now: float,
        limit: int | None,
        *,
        chunk: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete what retention allows (every route has passed it, older than ``retention``),
        at most ``limit`` rows, ``chunk`` per write; ``progress(n)`` after each chunk."""
        ...

    def snapshot(self) -> AbstractContextManager[object]: ...
    def use_routes(self, routes: Iterable[Any], settings: Any | None = None) -> None:
        """The routes' delivery policies and settings, when the caller has them parsed
        (JetStream: AckWait, MaxAckPending, stream limits); SQLite needs none."""
        ...

    def deliveries(self) -> Deliveries: ...
    def close(self) -> None: ...


class Deliveries(Protocol):
    """The worker's side. Success of a first attempt may cost nothing until :meth:`commit`."""

    async def attach(self, routes: Sequence[RouteStart], now: float | None = None) -> dict[str, Cursor]:
        """Make sure every route has a position (cursor / durable consumer); return them."""
        ...

    async def cursor(self, route: str) -> Cursor | None: ...
    async def read(self, route: str, broker: str, after: int, limit: int) -> Sequence[StoredEvent]: ...
    async def succeeded(
        self,
        route: str,
        seq: int,
        token: Any,
        *,
        scheduled: bool,
        dlq_id: int | None,
        attempts: Sequence[Any] = (),
    ) -> None:
        """Delivered. ``attempts``: attempt-history rows to keep with it (SQLite: in the same
        transaction; a store without attempt history may drop them)."""
        ...

    async def retry(self, retry: Retry, token: Any, attempts: Sequence[Any] = ()) -> None:
        """Attempt again at ``retry.due_at``. An ordered route's head event stays with its
        dispatcher, which waits the delay out and retries it in place: the store must not
        hand that event to anyone meanwhile (JetStream: MaxAckPending 1 keeps it so)."""
        ...

    async def dead_letter(
        self, letter: NewDeadLetter, token: Any, replaced: int | None, attempts: Sequence[Any] = ()
    ) -> int: ...
    async def dls_outcome(self, dlq_id: int, outcome: str) -> None: ...
    async def commit(self, progress: Sequence[Progress], now: float, recent: Sequence[Any] = ()) -> list[str]:
        """One write for many routes (with ``recent`` outcomes for ``evroute tail``, where the
        store keeps them); returns the routes whose epoch moved (re-read them)."""
        ...

    async def link(self, child: int, parent: int, kind: str, route: str) -> None:
        """Remember that event ``child`` answers ``parent`` (a reply): the console links them."""
        ...

    async def epochs(self) -> dict[str, int]: ...
    async def lag(self, broker: str, position: int) -> int: ...
    async def newest(self, broker: str) -> int:
        """The newest seq of ``broker`` (0 if none): lag without counting."""
        ...

    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[Retry]:
        """Retries the store schedules itself (SQLite); JetStream redelivers through read()."""
        ...

    async def due_for(self, route: str, now: float, limit: int, upto: int | None = None) -> list[Retry]:
        """One route's due retries, oldest due first; ``upto`` (an ordered route, whose head
        is retried in place): only dead-letter replays and rows at or behind that seq."""
        ...

    async def next_due(self, routes: Sequence[str], after: float | None = None) -> float | None: ...
    async def waiting(self, routes: Sequence[str]) -> int: ...
    async def retry_state(self, route: str, seq: int) -> Retry | None:
        """An ordered route's head event already on the schedule (SQLite); JetStream: None."""
        ...

    async def retry_event(self, retry: Retry) -> StoredEvent | None:
        """The event a retry is for (a replay's from its dead letter); None: gone, row dropped."""
        ...

    async def append(self, broker: str, events: Sequence[CloudEvent], now: float) -> AppendResult: ...
    async def append_each(
        self, requests: Sequence[tuple[str, Sequence[CloudEvent]]], now: float
    ) -> list[AppendResult | BaseException]:
        """Several requests' events ``(broker, events)`` at once, in arrival order, each stored
        entirely or not at all; one result per request. SQLite: one transaction for all (it
        raises, and stores none, when it fails); JetStream: each request on its own (an
        exception in the list is that request's)."""
        ...

    async def join(self, holder: str, now: float) -> bool:
        """Become a live worker; False: an exclusive store's presence is held by another."""
        ...

    async def beat(self, holder: str, now: float, counters: Mapping[str, int]) -> bool: ...
    async def leave(self, holder: str) -> None: ...
    async def close(self) -> None:
        """Let go of what the worker side holds (connections, pull subscriptions)."""
        ...

    def version(self) -> int:
        """Changes whenever another process wrote: the cheap wake-up check."""
        ...

    async def watch(self, changed: Callable[[], None]) -> None:
        """Run until cancelled, calling ``changed()`` when another process wrote (new events,
        a reset, a replay): the worker's wake-up. SQLite: the -wal file; JetStream: messages."""
        ...

    def problem(self) -> str | None:
        """None when the store takes writes now, else why not (``/healthz``; answers quickly)."""
        ...

    def configure(self, durability: str) -> None:
        """Apply ``settings.durability`` of the routes file (SQLite: synchronous pragma)."""
        ...

    async def housekeep(self) -> None:
        """Called about once a second off the delivery path (SQLite: a WAL checkpoint)."""
        ...


__all__ = [
    "AppendResult",
    "Cursor",
    "DeadLetter",
    "Deliveries",
    "EventStore",
    "NewDeadLetter",
    "Presence",
    "Progress",
    "Retry",
    "RouteStart",
    "RoutesDoc",
    "StoredEvent",
    "starts",
]
