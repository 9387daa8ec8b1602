"""Retention's deletion in a SQLite file: the rules are :mod:`evroute.retention`'s (which events
every route has finished with); here is how they are carried out in chunks of short write
transactions, each re-reading the positions inside its transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from evroute.store import attempts, links
from evroute.store.db import Store

CHUNK = 1000


def _brokers(conn: sqlite3.Connection) -> list[str]:
    """Every broker with stored events: one seek on the (broker, seq) index per broker."""
    found: list[str] = []
    row = conn.execute("SELECT min(broker) FROM events").fetchone()
    while row[0] is not None:
        found.append(str(row[0]))
        row = conn.execute("SELECT min(broker) FROM events WHERE broker > ?", (row[0],)).fetchone()
    return found


def _bound(conn: sqlite3.Connection, broker: str, routes: Sequence[Any]) -> int | None:
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
    routes: Sequence[Any],
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


def collect_routes(
    store: Store,
    routes: Sequence[Any],
    retention: float,
    now: float,
    limit: int | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete what retention allows of ``routes`` (anything with ``name``, ``broker`` and
    ``start``): at most ``limit`` rows (None = all), ``progress(n)`` told after every chunk.
    Returns how many went."""
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


__all__ = ["CHUNK", "collect_routes"]
