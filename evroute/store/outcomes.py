"""The newest delivery outcomes, as a bounded ring: what ``evroute tail`` and the console follow.

Every settled attempt (a first-try success too) is kept in the worker's memory and written
here with the worker's batched cursor commit, in the same transaction, at most ten times a
second; rows older than the newest ``RING`` are deleted in that transaction too. The table
therefore never grows past ``RING`` rows, whatever the traffic, and a reader in another
process (``evroute tail``, ``evroute ui``) follows it with ``n > last seen``.

A reader that falls more than ``RING`` outcomes behind misses the oldest ones; it notices
(the first ``n`` it reads is past ``last + 1``) and can say so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evroute.store.db import Store

RING = 2_000


@dataclass(frozen=True, slots=True)
class Outcome:
    n: int  # position in the ring: increases by one per outcome, never reused
    at: float
    route: str
    seq: int
    attempt: int
    outcome: str  # delivered | retrying | dead
    status: int | None
    latency_ms: float | None
    # From the event's log row at read time (None once retention deleted it): the ring stays
    # small, so the bytes a delivered event costs do not move.
    broker: str | None
    id: str | None
    type: str | None


# What the worker buffers per outcome: (at, route, seq, attempt, outcome, status, latency_ms).
Pending = tuple[float, str, int, int, str, "int | None", float]

_COLS = "n, at, route, seq, attempt, outcome, status, latency_ms"
_READ = (
    "SELECT o.n, o.at, o.route, o.seq, o.attempt, o.outcome, o.status, o.latency_ms, e.broker, e.id, e.type "
    "FROM outcomes o LEFT JOIN events e ON e.seq = o.seq"
)


def last(store: Store) -> int:
    """The newest ``n`` written (0 when none): a follower starts after it."""
    row = store.conn.execute("SELECT max(n) FROM outcomes").fetchone()
    return int(row[0] or 0)


def insert(conn: sqlite3.Connection, pending: Sequence[Pending]) -> None:
    """Inside the caller's write transaction: append ``pending`` and trim the ring."""
    if not pending:
        return
    row = conn.execute("SELECT max(n) FROM outcomes").fetchone()
    start = int(row[0] or 0) + 1
    conn.executemany(
        f"INSERT INTO outcomes ({_COLS}) VALUES (?,?,?,?,?,?,?,?)",
        [(start + i, *p) for i, p in enumerate(pending[-RING:])],
    )
    top = start + min(len(pending), RING) - 1
    if top > RING:
        conn.execute("DELETE FROM outcomes WHERE n <= ?", (top - RING,))


def after(store: Store, n: int, limit: int = 1000) -> list[Outcome]:
    """Outcomes newer than ``n``, oldest first."""
    rows = store.conn.execute(f"{_READ} WHERE o.n > ? ORDER BY o.n LIMIT ?", (n, limit)).fetchall()
    return [Outcome(*r) for r in rows]


def newest(store: Store, limit: int = 100) -> list[Outcome]:
    """The newest ``limit`` outcomes, oldest first."""
    rows = store.conn.execute(f"{_READ} ORDER BY o.n DESC LIMIT ?", (limit,)).fetchall()
    return [Outcome(*r) for r in reversed(rows)]


def for_seqs(store: Store, seqs: Iterable[int]) -> dict[int, list[Outcome]]:
    """The outcomes still in the ring for these seqs, by seq (oldest first)."""
    wanted = sorted(set(seqs))
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    found: dict[int, list[Outcome]] = {}
    for r in store.conn.execute(f"{_READ} WHERE o.seq IN ({marks}) ORDER BY o.n", wanted):
        o = Outcome(*r)
        found.setdefault(o.seq, []).append(o)
    return found


__all__ = ["RING", "Outcome", "Pending", "after", "for_seqs", "insert", "last", "newest"]
