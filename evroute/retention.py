"""Retention: delete events that every route has finished with, once older than ``settings.retention``.

An event row goes when all of these hold:

- it was published more than ``retention`` ago;
- every route of the *current* routes file on its broker has passed it (``seq <= cursor``).
  A paused route holds its backlog. A route whose cursor does not exist yet holds everything
  if it starts ``earliest`` and nothing if it starts ``latest`` (it will begin at the end);
- no retry row names its seq (a retry reads its event from the log).

Cursors of routes no longer in the routes file hold nothing back: the cursor is kept so that
re-adding the name resumes, and it then resumes from the oldest event still stored. A broker
no route reads keeps its events for ``retention`` only. Dead letters keep their own copy of the
event, so ``dlq show`` and ``dlq replay`` work after the log row is gone.

Deletion runs in chunks of ``chunk`` rows, each its own short write transaction, so a
publisher or the worker waits for the write lock at most one chunk. Each chunk re-reads the
cursors inside its transaction: a ``subscribe reset --to earliest`` between two chunks stops
the deletion right there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from evroute.routes.model import Route, RouteSet
from evroute.store import Store, attempts, links

CHUNK = 1000
# The worker runs a pass every minute inside its event loop; this bounds one pass there.
WORKER_LIMIT = 50_000


def _brokers(conn: sqlite3.Connection) -> list[str]:
    """Every broker with stored events: one seek on the (broker, seq) index per broker."""
    found: list[str] = []
    row = conn.execute("SELECT min(broker) FROM events").fetchone()
    while row[0] is not None:
        found.append(str(row[0]))
        row = conn.execute("SELECT min(broker) FROM events WHERE broker > ?", (row[0],)).fetchone()
    return found


def _bound(conn: sqlite3.Connection, broker: str, routes: Sequence[Route]) -> int | None:
    """The highest seq every route of ``broker`` has passed; None means no limit."""
    bound: int | None = None
    for route in routes:
        row = conn.execute(
            "SELECT position FROM cursors WHERE route = ? AND broker = ?", (route.name, broker)
        ).fetchone()
        if row is None:
            if route.start == "latest":
                continue  # will start at the end of the log: needs nothing stored now
            return 0
        position = int(row[0])
        bound = position if bound is None else min(bound, position)
    return bound


def _collect_broker(
    store: Store,
    broker: str,
    routes: Sequence[Route],
    cutoff: float,
    budget: int | None,
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    deleted = 0
    after = 0
    while budget is None or deleted < budget:
        size = chunk if budget is None else min(chunk, budget - deleted)
        with store.write() as conn:
            bound = _bound(conn, broker, routes)
            upper = bound if bound is not None else 2**62
            rows = conn.execute(
                "SELECT seq, published_at FROM events WHERE broker = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (broker, after, upper, size),
            ).fetchall()
            # Only the old prefix goes: seqs follow publish order, so the first young event
            # ends this pass for the broker (an out-of-order clock only delays a deletion).
            old = 0
            for _, published_at in rows:
                if published_at >= cutoff:
                    break
                old += 1
            if old == 0:
                return deleted
            last = int(rows[old - 1][0])
            cur = conn.execute(
                "DELETE FROM events WHERE broker = ? AND seq > ? AND seq <= ? "
                "AND seq NOT IN (SELECT seq FROM retries WHERE seq > ? AND seq <= ?)",
                (broker, after, last, after, last),
            )
            deleted += cur.rowcount
            attempts.delete_gone(conn, after, last)  # the attempt history goes with its events
            links.delete_gone(conn, after, last)
        if progress is not None:
            progress(cur.rowcount)
        if old < len(rows) or len(rows) < size:
            return deleted
        after = last
    return deleted


def collect(
    store: Any,
    routeset: RouteSet,
    now: float,
    limit: int | None = WORKER_LIMIT,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete what retention allows (at most ``limit`` rows; None = all); returns how many.
    ``progress(n)`` is told after every chunk how many rows that chunk deleted.

    ``store`` is a store behind the seam or a SQLite connection itself; a store that is no
    SQLite file ages events out by itself (a JetStream stream's max age) and says how."""
    retention = routeset.settings.retention
    if retention is None:
        return 0
    if not isinstance(store, Store):
        db = getattr(store, "db", None)
        if not isinstance(db, Store):
            from evroute.store.base import starts

            return int(store.collect(starts(routeset.routes), retention, now, limit))
        store = db
    return collect_routes(store, routeset.routes, retention, now, limit, chunk, progress)


def collect_routes(
    store: Store,
    routes: Sequence[Any],
    retention: float,
    now: float,
    limit: int | None = WORKER_LIMIT,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """:func:`collect` for routes given as anything with ``name``, ``broker`` and ``start``."""
    cutoff = now - retention
    by_broker: dict[str, list[Any]] = {}
    for route in routes:
        by_broker.setdefault(route.broker, []).append(route)
    deleted = 0
    for broker in _brokers(store.conn):
        budget = None if limit is None else limit - deleted
        if budget is not None and budget <= 0:
            break
        deleted += _collect_broker(
            store, broker, by_broker.get(broker, []), cutoff, budget, max(1, chunk), progress
        )
    return deleted


__all__ = ["CHUNK", "WORKER_LIMIT", "collect", "collect_routes"]
