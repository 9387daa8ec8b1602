"""Where things stand: every route's status, and one event's fate route by route.

Both return the ``--json`` documents of SPEC 7.1 exactly (times as RFC 3339 UTC strings,
absent values as ``None``), so the CLI only renders them.

Both read through the store seam (:mod:`evroute.store.base`). ``route_status`` runs on every
``evroute status`` and must stay fast on a log of millions of events: on SQLite each of its
queries is a primary-key lookup, or a count over a range of an index; none reads the event
rows themselves.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from evroute.clock import rfc3339
from evroute.cloudevent import CloudEvent, to_dict
from evroute.delay import held_until
from evroute.errors import NotFound, RoutesInvalid
from evroute.routes.model import Route, RouteSet
from evroute.routes.show import subscriber_text
from evroute.store import Store
from evroute.store.base import Cursor, EventStore, Presence
from evroute.store.pace import RoutePace
from evroute.store.retries import is_scheduled


def as_store(store: EventStore | Store) -> EventStore:
    """The store seam; a SQLite connection itself is taken as the SQLite store over it."""
    if isinstance(store, Store):
        from evroute.store.sqlite import SqliteStore

        return SqliteStore.over(store)
    return store


RUNNING = "running"
NOT_RUNNING = "not running"

STATES = ("delivered", "pending", "scheduled", "retrying", "dead", "filtered", "paused")


@dataclass(frozen=True, slots=True)
class LoadedRoutes:
    """The routes file as far as it could be read: ``problem`` says why it could not."""

    routeset: RouteSet
    problem: str | None = None
    missing: bool = False


def load_lenient(path: str) -> LoadedRoutes:
    """The routes at ``path``, or an empty set and the reason when the file is missing or invalid.

    Inspection commands still work without a usable routes file: they show what the
    database holds (cursors, dead letters) and say why the routes are not shown.
    """
    if not os.path.exists(path):
        return LoadedRoutes(RouteSet(), f"routes file '{path}' does not exist", missing=True)
    from evroute.routes.load import load_routes

    try:
        return LoadedRoutes(load_routes(path, resolve=False))
    except RoutesInvalid as exc:
        return LoadedRoutes(RouteSet(), exc.message)


def routes_of(store: EventStore, path: str) -> LoadedRoutes:
    """The routes the store's workers run: the file at ``path`` on SQLite, the copy kept in
    the store on a cluster (NATS: KV ``EVROUTE_ROUTES``), read as :func:`load_lenient` does."""
    if store.kind == "sqlite":
        return load_lenient(path)
    doc = store.routes(path)
    if doc is None:
        return LoadedRoutes(RouteSet(), "no routes stored yet (evroute routes apply FILE)", missing=True)
    from evroute.routes.load import load_routes_text

    try:
        return LoadedRoutes(load_routes_text(doc.text, path, resolve=False))
    except RoutesInvalid as exc:
        return LoadedRoutes(RouteSet(), exc.message)


# --------------------------------------------------------------------------- status


def worker_state(store: EventStore | Store, now: float) -> dict[str, Any]:
    """``{"state", "pid", "since"}``: running while a worker's heartbeat is fresh (the
    longest-running one when several share the routes)."""
    store = as_store(store)
    live = sorted((w for w in store.workers(now) if w.alive), key=lambda w: w.since)
    if not live:
        return {"state": NOT_RUNNING, "pid": None, "since": None}
    return {"state": RUNNING, "pid": live[0].pid, "since": rfc3339(live[0].since)}


def _cursor_for(route: Route, found: dict[str, Cursor]) -> Cursor | None:
    # A cursor left on another broker is not this route's position: the next command that
    # creates cursors restarts the route on its new broker.
    cursor = found.get(route.name)
    return cursor if cursor is not None and cursor.broker == route.broker else None


def _masked(route: Route | None, text: str | None) -> str | None:
    # The worker masks before it commits; masking again costs nothing and covers old rows.
    return text if route is None or text is None else route.mask(text)


@dataclass(frozen=True, slots=True)
class _Figures:
    retries: dict[str, tuple[int, float | None]]
    dead: dict[str, int]
    delayed: dict[str, int]  # delayed events on the schedule, waiting for their first delivery


def _route_row(
    store: EventStore,
    figures: _Figures,
    name: str,
    broker: str,
    cursor: Cursor | None,
    route: Route | None,
    running: bool,
) -> dict[str, Any]:
    waiting, next_due = figures.retries.get(name, (0, None))
    reported = store.pace(name)
    lag = None if cursor is None else store.lag(broker, cursor.position)
    # in_flight and the breaker live in the worker's memory (committed with the cursor):
    # with no worker running nothing is in flight and the next worker starts closed.
    in_flight = cursor.in_flight if cursor is not None and running else 0
    breaker = cursor.breaker if cursor is not None and running else "closed"
    return {
        "name": name,
        "broker": broker,
        "subscriber": subscriber_text(route) if route is not None else None,
        "cursor": None if cursor is None else cursor.position,
        "lag": lag,
        "in_flight": in_flight,
        "retrying": waiting,
        "next_retry_due": rfc3339(next_due),
        "dead_letters": figures.dead.get(name, 0),
        "delivered": 0 if cursor is None else cursor.delivered,
        "failed": 0 if cursor is None else cursor.failed,
        "last_error": _masked(route, None if cursor is None else cursor.last_error),
        "paused": route.paused if route is not None else None,
        "breaker": breaker,
        "throttled": bool(running and reported is not None and reported.throttled),
        "scheduled": figures.delayed.get(name, 0),
        "endpoints": _endpoints(route, reported, running),
    }


def _endpoints(route: Route | None, reported: RoutePace | None, running: bool) -> list[dict[str, Any]] | None:
    """A consumer group's endpoints with what the worker last said of them (None for one endpoint).
    With no worker running nothing is in flight and every endpoint starts healthy."""
    uris = route.subscriber.uris if route is not None else ()
    if not uris:
        return None
    known = {e["uri"]: e for e in (reported.endpoints or [])} if reported is not None else {}
    out = []
    for uri in uris:
        e = known.get(route.mask(uri) if route is not None else uri, {})
        live = running and bool(e)
        out.append(
            {
                "uri": route.mask(uri) if route is not None else uri,
                "healthy": bool(e.get("healthy", True)) if live else True,
                "in_flight": int(e.get("in_flight", 0)) if live else 0,
                "delivered": int(e.get("delivered", 0)),
                "failed": int(e.get("failed", 0)),
                "last_error": e.get("last_error"),
            }
        )
    return out


def route_status(store: EventStore | Store, routeset: RouteSet, now: float) -> dict[str, Any]:
    """The ``status --json`` document: the worker, then every route of the file in file order,
    then the cursors of routes no longer in the file (``subscriber`` and ``paused`` None)."""
    store = as_store(store)
    with store.snapshot():
        worker = worker_state(store, now)
        running = worker["state"] == RUNNING
        found = store.cursors()
        names = list(dict.fromkeys([*(r.name for r in routeset.routes), *found]))
        figures = _Figures(store.retry_summary(names), store.dead_letter_counts(names), store.delayed(names))
        rows = []
        for route in routeset.routes:
            cursor = _cursor_for(route, found)
            rows.append(_route_row(store, figures, route.name, route.broker, cursor, route, running))
        known = {r.name for r in routeset.routes}
        for name in sorted(set(found) - known):
            cursor = found[name]
            rows.append(_route_row(store, figures, name, cursor.broker, cursor, None, running))
        workers = [_worker_row(w) for w in store.workers(now) if w.alive]
    return {"worker": worker, "workers": workers, "routes": rows}


def _worker_row(w: Presence) -> dict[str, Any]:
    """One live worker of SPEC 16's ``workers`` list (SQLite: the lease holder)."""
    return {
        "id": w.holder,
        "host": w.host,
        "pid": w.pid,
        "since": rfc3339(w.since),
        "heartbeat": rfc3339(w.heartbeat),
        "delivered": int(w.counters.get("delivered", 0)),
        "failed": int(w.counters.get("failed", 0)),
    }


# --------------------------------------------------------------------------- one event


@dataclass(frozen=True, slots=True)
class FoundEvent:
    """The event a key names; ``others`` are further events with the same id (seq, broker, source).

    ``published_at`` is None when the log row is gone (retention) and the event was found
    in a dead letter's own copy.
    """

    seq: int | None
    broker: str
    published_at: float | None
    event: CloudEvent
    others: tuple[tuple[int | None, str, str], ...] = ()


def find_event(store: EventStore | Store, key: str) -> FoundEvent:
    """The event with seq ``key`` (a number) or id ``key``; the newest when an id is in several
    brokers or sources. A number that is no seq is tried as an id. Raises NotFound."""
    store = as_store(store)
    key = key.strip()
    if key.isascii() and key.isdigit():
        stored = store.event(int(key))
        if stored is not None:
            return FoundEvent(stored.seq, stored.broker, stored.published_at, stored.event)
        letters = store.dead_letters_of(seq=int(key))
        if letters:
            return FoundEvent(letters[-1].seq, letters[-1].broker, None, letters[-1].event)
    matches = store.find(key)
    if matches:
        *older, newest = matches
        others = tuple((s.seq, s.broker, s.event.source) for s in reversed(older))
        return FoundEvent(newest.seq, newest.broker, newest.published_at, newest.event, others)
    # Deleted from the log by retention, but a dead letter keeps its own copy.
    letters = list(reversed(store.dead_letters_of(event_id=key)))
    if letters:
        newest_letter, *rest = letters
        copies = tuple((d.seq, d.broker, d.event.source) for d in rest if d.seq != newest_letter.seq)
        return FoundEvent(newest_letter.seq, newest_letter.broker, None, newest_letter.event, copies)
    raise NotFound(f"no event with id or seq '{key}' (see `evroute events list`)")


def attempt_doc(a: Any) -> dict[str, Any]:
    """One attempt in the ``events show --json`` shape (SPEC 16)."""
    return {
        "attempt": a.attempt,
        "at": rfc3339(a.at),
        "duration_ms": round(a.duration_ms, 1),
        "status": a.status,
        "error": a.error,
        "endpoint": a.endpoint,
    }


def _state(
    store: EventStore,
    route: Route,
    cursor: Cursor | None,
    found: FoundEvent,
    history: dict[str, list[dict[str, Any]]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "route": route.name,
        "state": "delivered",
        "attempt": None,
        "next_due": None,
        "last_error": None,
        "dlq_id": None,
        "failed_filter": None,
        "due": None,
        "attempts": [] if history is None else history.get(route.name, []),
    }
    seq = found.seq
    retry = store.retry_state(route.name, seq) if seq is not None else None
    if retry is not None and is_scheduled(retry):
        entry.update(state="scheduled", due=rfc3339(retry.due_at), next_due=rfc3339(retry.due_at))
        return entry
    if retry is not None:
        # A retry row wins over a dead letter: it is a replay of that dead letter under way.
        entry.update(
            state="retrying",
            attempt=retry.attempt,
            next_due=rfc3339(retry.due_at),
            last_error=retry.last_error,
            dlq_id=retry.dlq_id,
        )
        return entry
    letters = [d for d in store.dead_letters_of(seq=seq) if d.route == route.name] if seq is not None else []
    if letters:
        letter = letters[-1]
        entry.update(state="dead", attempt=letter.attempts, last_error=letter.error, dlq_id=letter.id)
        return entry
    failed = route.matcher.explain_event(found.event)
    if failed is not None:
        entry.update(state="filtered", failed_filter=failed)
        return entry
    if cursor is None or seq is None or seq > cursor.position:
        held = held_until(found.event, time.time() if now is None else now)
        if held is not None:
            # Not read by the route yet, but held: it will go on the schedule, not out now.
            entry.update(state="scheduled", due=rfc3339(held), next_due=rfc3339(held))
        else:
            entry["state"] = "paused" if route.paused else "pending"
    return entry


def trace(
    store: EventStore | Store, routeset: RouteSet, found: FoundEvent, now: float | None = None
) -> dict[str, Any]:
    """The ``events show --json`` document of an event already found."""
    store = as_store(store)
    now = time.time() if now is None else now
    with store.snapshot():
        found_cursors = store.cursors()
        history: dict[str, list[dict[str, Any]]] = {}
        if found.seq is not None:
            for a in store.attempts_of(found.seq):
                history.setdefault(a.route, []).append(attempt_doc(a))
        states = [
            _state(store, route, _cursor_for(route, found_cursors), found, history, now)
            for route in routeset.routes
            if route.broker == found.broker
        ]
    return {
        "seq": found.seq,
        "broker": found.broker,
        "published_at": rfc3339(found.published_at),
        "event": to_dict(found.event),
        "routes": states,
    }


def trace_event(
    store: EventStore | Store, routeset: RouteSet, key: str, now: float | None = None
) -> dict[str, Any]:
    """``events show KEY --json``: the event with id or seq ``key`` and its state per route of
    its broker: delivered, pending, scheduled, retrying, dead, filtered or paused."""
    store = as_store(store)
    return trace(store, routeset, find_event(store, key), now)


__all__ = [
    "NOT_RUNNING",
    "RUNNING",
    "STATES",
    "FoundEvent",
    "LoadedRoutes",
    "attempt_doc",
    "find_event",
    "load_lenient",
    "route_status",
    "trace",
    "trace_event",
    "worker_state",
]
