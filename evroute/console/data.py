"""What the console shows, as plain data, read through the store modules and ``inspect``.

Every read runs in a worker thread with that thread's own connection (SQLite connections are
not shared across threads), so a slow query never stalls the event loop, and inside the
worker process never stalls deliveries.

On a NATS JetStream store every read goes through the store seam (``store/base.py``) of one
shared store (its connection lives on a loop thread of its own); the routes are the copy
kept in the cluster; the outcomes are stream ``EVROUTE_OUTCOMES``. Attempt history and reply
links are kept by SQLite only: on NATS an event page has no timeline and says so.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from evroute.clock import rfc3339
from evroute.cloudevent import to_dict
from evroute.errors import NotFound
from evroute.inspect import LoadedRoutes, attempt_doc, find_event, load_lenient, route_status, trace
from evroute.routes.model import RouteSet
from evroute.store import Store, attempts, browse, outcomes
from evroute.store.deadletters import DeadLetter
from evroute.store.opener import Credentials, StoreURL

SAMPLES = 150  # deliveries/s history per route: 150 samples, one every RATE_EVERY seconds
RATE_EVERY = 2.0
REMOTE_OUTCOMES = 200  # outcomes a page reads from a server (each one is a round trip)
ROUTES_FOR = 2.0  # seconds the routes read from a cluster are reused


@dataclass
class Rates:
    """Deliveries per second per route, sampled from the cursors' delivered counters."""

    history: dict[str, collections.deque[float]] = field(default_factory=dict)
    last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def sample(self, now: float, delivered: dict[str, int]) -> None:
        for name, count in delivered.items():
            before = self.last.get(name)
            self.last[name] = (now, count)
            if before is None:
                continue
            span = now - before[0]
            if span <= 0:
                continue
            rate = max(0.0, (count - before[1]) / span)
            self.history.setdefault(name, collections.deque(maxlen=SAMPLES)).append(rate)

    def of(self, name: str) -> list[float]:
        return list(self.history.get(name, ()))


class Reader:
    def __init__(self, db: str | StoreURL, routes: str, credentials: Credentials | None = None) -> None:
        """``db``: the SQLite file, or a store URL (``nats://``: read through the seam)."""
        self.where = db
        self.remote = not isinstance(db, str) and db.kind != "sqlite"
        self.db = db if isinstance(db, str) else db.path
        self.credentials = credentials
        self.routes_path = routes
        self._local = threading.local()
        self._routes: tuple[tuple[int, int] | float | None, LoadedRoutes] | None = None
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._shared: Any = None  # the NATS store, shared by every thread
        self.rates = Rates()

    # ------------------------------------------------------------------ plumbing

    def seam(self) -> Any:
        """The store seam: over this thread's SQLite connection, or the shared NATS store."""
        if not self.remote:
            return _seam(self.store())
        with self._open_lock:
            if self._shared is None:
                from evroute.store.opener import open_store

                assert isinstance(self.where, StoreURL)
                shared = open_store(self.where, create=False, credentials=self.credentials)
                shared.last_outcome()  # connects now, from one thread
                self._shared = shared
            return self._shared

    def close(self) -> None:
        with self._open_lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def outcomes_newest(self, limit: int) -> list[outcomes.Outcome]:
        """The newest ``limit`` outcomes, oldest first (the ring on SQLite, the stream on NATS)."""
        if not self.remote:
            return outcomes.newest(self.store(), limit)
        seam = self.seam()
        top = seam.last_outcome()
        found: list[outcomes.Outcome] = seam.recent_outcomes(max(0, top - limit), limit)
        return found

    def outcomes_of(self, seqs: list[int], broker: str | None = None) -> dict[int, list[outcomes.Outcome]]:
        if not self.remote:
            return outcomes.for_seqs(self.store(), seqs)
        wanted = set(seqs)
        out: dict[int, list[outcomes.Outcome]] = {}
        for o in self.outcomes_newest(REMOTE_OUTCOMES):
            if o.seq in wanted and (broker is None or o.broker == broker):
                out.setdefault(o.seq, []).append(o)
        return out

    def store(self) -> Store:
        if self.remote:
            from evroute.errors import InvalidInput

            raise InvalidInput("the console shows this for a SQLite store only")
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.db, create=False)
            self._local.store = store
        return store

    def loaded(self) -> LoadedRoutes:
        """The routes file, parsed again only when it changed on disk (on a cluster: the copy
        kept in the store, read again every few seconds)."""
        if self.remote:
            from evroute.inspect import routes_of

            with self._lock:
                now = time.monotonic()
                held = self._routes
                if held is not None and isinstance(held[0], float) and now - held[0] < ROUTES_FOR:
                    return held[1]
            loaded = routes_of(self.seam(), self.routes_path)
            with self._lock:
                self._routes = (now, loaded)
            return loaded
        try:
            st = os.stat(self.routes_path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._routes is None or self._routes[0] != stamp or stamp is None:
                self._routes = (stamp, load_lenient(self.routes_path))
            return self._routes[1]

    def routeset(self) -> RouteSet:
        return self.loaded().routeset

    # ------------------------------------------------------------------ pages

    def sample_rates(self) -> None:
        """One deliveries/s sample per route (the console's watcher calls this every RATE_EVERY s)."""
        found = self.seam().cursors()
        self.rates.sample(time.time(), {name: c.delivered for name, c in found.items()})

    def overview(self) -> dict[str, Any]:
        now = time.time()
        loaded = self.loaded()
        seam = self.seam()
        doc = route_status(seam, loaded.routeset, now)
        by_name = loaded.routeset.by_name()
        for r in doc["routes"]:
            r["rates"] = self.rates.of(r["name"])
            route = by_name.get(r["name"])
            r["filter"] = route.matcher.description if route is not None else None
        doc["problem"] = loaded.problem
        if self.remote:
            doc["dead_letters"] = sum(seam.dead_letter_counts().values())
        else:
            doc["dead_letters"] = browse.dead_letter_total(self.store())
        doc["last_outcome"] = seam.last_outcome()
        return doc

    def events(self, filters: dict[str, str], limit: int = 50) -> dict[str, Any]:
        seam = self.seam()
        key = filters.get("q", "").strip()
        route, outcome = filters.get("route") or None, filters.get("outcome") or None
        if key:
            try:
                found = find_event(seam, key)
            except NotFound:
                rows: list[dict[str, Any]] = []
            else:
                rows = [
                    {
                        "seq": found.seq,
                        "broker": found.broker,
                        "published_at": rfc3339(found.published_at),
                        "event": to_dict(found.event),
                    }
                ]
        elif route or outcome:
            # Delivery outcomes, newest first, from the ring (every outcome, first tries included).
            seen: list[dict[str, Any]] = []
            ring_size = REMOTE_OUTCOMES if self.remote else outcomes.RING
            for o in reversed(self.outcomes_newest(ring_size)):
                if (route and o.route != route) or (outcome and o.outcome != outcome):
                    continue
                if filters.get("broker") and o.broker != filters["broker"]:
                    continue
                if filters.get("type") and o.type != filters["type"]:
                    continue
                seen.append(
                    {
                        "seq": o.seq,
                        "broker": o.broker,
                        "published_at": None,
                        "event": {"id": o.id, "type": o.type},
                    }
                )
                if len(seen) >= limit:
                    break
            rows = seen
        elif self.remote:
            source = filters.get("source") or None
            rows = [
                {
                    "seq": e.seq,
                    "broker": e.broker,
                    "published_at": rfc3339(e.published_at),
                    "event": to_dict(e.event),
                }
                for e in seam.events(
                    broker=filters.get("broker") or None, type=filters.get("type") or None, limit=limit
                )
                if source is None or e.event.source == source
            ]
        else:
            found_events = browse.events(
                self.store(),
                broker=filters.get("broker") or None,
                type=filters.get("type") or None,
                source=filters.get("source") or None,
                limit=limit,
            )
            rows = [
                {
                    "seq": e.seq,
                    "broker": e.broker,
                    "published_at": rfc3339(e.published_at),
                    "event": to_dict(e.event),
                }
                for e in found_events
            ]
        ring = self.outcomes_of([r["seq"] for r in rows if r["seq"] is not None])
        for r in rows:
            r["outcomes"] = [
                {"route": o.route, "outcome": o.outcome, "status": o.status, "attempt": o.attempt}
                for o in ring.get(r["seq"], [])
                if not self.remote or o.broker == r["broker"]
            ]
        return {"rows": rows, "last_outcome": seam.last_outcome()}

    def event(self, key: str) -> dict[str, Any]:
        seam = self.seam()
        found = find_event(seam, key)
        doc = trace(seam, self.routeset(), found)
        doc["timeline"] = not self.remote  # attempt history: SQLite only
        if found.seq is not None:
            ring = self.outcomes_of([found.seq], found.broker if self.remote else None).get(found.seq, [])
            for entry in doc["routes"]:
                entry["recent"] = [
                    {
                        "at": rfc3339(o.at),
                        "attempt": o.attempt,
                        "outcome": o.outcome,
                        "status": o.status,
                        "latency_ms": o.latency_ms,
                    }
                    for o in ring
                    if o.route == entry["route"]
                ]
        doc["data_pretty"] = _pretty(doc["event"])
        doc["links"] = self._links(found.seq)
        return doc

    def _links(self, seq: int | None) -> dict[str, Any]:
        from evroute.store import links

        if seq is None or self.remote:  # reply links: SQLite only
            return {"parent": None, "children": []}
        parent, children = links.of(self.store(), seq)
        return {
            "parent": None
            if parent is None
            else {"seq": parent.parent, "kind": parent.kind, "route": parent.route},
            "children": [{"seq": c.seq, "kind": c.kind, "route": c.route} for c in children],
        }

    def dead_letters(self, route: str | None, reason: str | None) -> list[DeadLetter]:
        if self.remote:
            found: list[DeadLetter] = self.seam().dead_letters(route)
            return [d for d in found if reason is None or d.reason == reason]
        return browse.dead_letters(self.store(), route=route, reason=reason)

    def route(self, name: str) -> dict[str, Any] | None:
        from evroute.routes.show import route_dict

        routeset = self.routeset()
        route = routeset.by_name().get(name)
        if route is None:
            return None
        status = route_status(self.seam(), RouteSet(routes=(route,), settings=routeset.settings), time.time())
        recent = (
            []  # attempt history: SQLite only
            if self.remote
            else [
                {**attempt_doc(a), "seq": a.seq, "outcome": a.outcome}
                for a in attempts.recent(self.store(), route=name, limit=20)
            ]
        )
        return {"definition": route_dict(route), "status": status["routes"][0], "attempts": recent}

    def reset_preview(self, name: str, to: str) -> dict[str, Any]:
        position, count = browse.reset_preview(self.store(), name, to)
        return {"position": position, "events": count}

    def send_defaults(self, type: str | None) -> dict[str, Any]:
        if self.remote:
            newest = self.seam().events(limit=50)
            known = sorted({e.event.type for e in newest})
            last = next((e for e in newest if e.event.type == type), None) if type else None
        else:
            store = self.store()
            known = browse.types(store)
            last = browse.last_of_type(store, type) if type else None
        if last is None:
            return {"types": known, "event": None, "broker": "default"}
        return {"types": known, "event": to_dict(last.event), "broker": last.broker}


def _pretty(event: dict[str, Any]) -> str:
    if "data" in event:
        return json.dumps(event["data"], indent=2, ensure_ascii=False)
    if "data_base64" in event:
        return f"(base64) {event['data_base64']}"
    return ""


__all__ = ["Rates", "Reader"]


def _seam(store: Store) -> Any:
    """The store seam over the console's own connection (``inspect`` reads through it)."""
    from evroute.store.sqlite import SqliteStore

    return SqliteStore.over(store)
