"""What the console shows, as plain data, read through the store modules and ``inspect``.

Every read runs in a worker thread with that thread's own connection (SQLite connections are
not shared across threads), so a slow query never stalls the event loop, and inside the
worker process never stalls deliveries.
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

SAMPLES = 150  # deliveries/s history per route: 150 samples, one every RATE_EVERY seconds
RATE_EVERY = 2.0


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
    def __init__(self, db: str, routes: str) -> None:
        self.db = db
        self.routes_path = routes
        self._local = threading.local()
        self._routes: tuple[tuple[int, int] | None, LoadedRoutes] | None = None
        self._lock = threading.Lock()
        self.rates = Rates()

    # ------------------------------------------------------------------ plumbing

    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.db, create=False)
            self._local.store = store
        return store

    def loaded(self) -> LoadedRoutes:
        """The routes file, parsed again only when it changed on disk."""
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
        from evroute.store import cursors

        found = cursors.all_cursors(self.store())
        self.rates.sample(time.time(), {name: c.delivered for name, c in found.items()})

    def overview(self) -> dict[str, Any]:
        now = time.time()
        loaded = self.loaded()
        store = self.store()
        doc = route_status(_seam(store), loaded.routeset, now)
        by_name = loaded.routeset.by_name()
        for r in doc["routes"]:
            r["rates"] = self.rates.of(r["name"])
            route = by_name.get(r["name"])
            r["filter"] = route.matcher.description if route is not None else None
        doc["problem"] = loaded.problem
        doc["dead_letters"] = browse.dead_letter_total(store)
        doc["last_outcome"] = outcomes.last(store)
        return doc

    def events(self, filters: dict[str, str], limit: int = 50) -> dict[str, Any]:
        store = self.store()
        key = filters.get("q", "").strip()
        route, outcome = filters.get("route") or None, filters.get("outcome") or None
        if key:
            try:
                found = find_event(_seam(store), key)
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
            for o in reversed(outcomes.newest(store, outcomes.RING)):
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
        else:
            found_events = browse.events(
                store,
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
        ring = outcomes.for_seqs(store, [r["seq"] for r in rows if r["seq"] is not None])
        for r in rows:
            r["outcomes"] = [
                {"route": o.route, "outcome": o.outcome, "status": o.status, "attempt": o.attempt}
                for o in ring.get(r["seq"], [])
            ]
        return {"rows": rows, "last_outcome": outcomes.last(store)}

    def event(self, key: str) -> dict[str, Any]:
        store = self.store()
        found = find_event(_seam(store), key)
        doc = trace(_seam(store), self.routeset(), found)
        if found.seq is not None:
            ring = outcomes.for_seqs(store, [found.seq]).get(found.seq, [])
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

        if seq is None:
            return {"parent": None, "children": []}
        parent, children = links.of(self.store(), seq)
        return {
            "parent": None
            if parent is None
            else {"seq": parent.parent, "kind": parent.kind, "route": parent.route},
            "children": [{"seq": c.seq, "kind": c.kind, "route": c.route} for c in children],
        }

    def dead_letters(self, route: str | None, reason: str | None) -> list[DeadLetter]:
        return browse.dead_letters(self.store(), route=route, reason=reason)

    def route(self, name: str) -> dict[str, Any] | None:
        from evroute.routes.show import route_dict

        routeset = self.routeset()
        route = routeset.by_name().get(name)
        if route is None:
            return None
        status = route_status(
            _seam(self.store()), RouteSet(routes=(route,), settings=routeset.settings), time.time()
        )
        recent = [
            {**attempt_doc(a), "seq": a.seq, "outcome": a.outcome}
            for a in attempts.recent(self.store(), route=name, limit=20)
        ]
        return {"definition": route_dict(route), "status": status["routes"][0], "attempts": recent}

    def reset_preview(self, name: str, to: str) -> dict[str, Any]:
        position, count = browse.reset_preview(self.store(), name, to)
        return {"position": position, "events": count}

    def send_defaults(self, type: str | None) -> dict[str, Any]:
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
