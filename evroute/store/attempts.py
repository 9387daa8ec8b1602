"""Attempt history: one row per failed delivery attempt, and one for the final success of an
event that had failed before.

A first-try success writes nothing here, so fan-out still costs no copies and the bytes a
delivered event takes do not change. The rows are written inside the transaction of the
bookkeeping they belong to (a retry row, a dead letter, the removal of a retry row after the
success), never on their own, so a crash can never leave a timeline that disagrees with the
retry schedule. Retention deletes them with their event.

Replays of a dead letter count attempts from 1 again: rows are ordered by when they were
written (``id``), never by attempt number alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from evroute.store.db import Store

BODY_EXCERPT = 256  # bytes of a failed response body (or stderr tail) kept per attempt


@dataclass(frozen=True, slots=True)
class Attempt:
    route: str
    seq: int  # negative for a replayed dead letter whose event left the log (-dead letter id)
    attempt: int  # 1-based, as sent in ``evroute-attempt``
    at: float  # when the attempt started
    duration_ms: float
    outcome: str  # success | retriable | permanent
    status: int | None  # HTTP status or exit code; None when there was no response
    error: str | None
    body: bytes | None
    endpoint: str | None


_COLS = "route, seq, attempt, at, duration_ms, outcome, status, error, body, endpoint"


def insert(conn: sqlite3.Connection, rows: Iterable[Attempt]) -> None:
    """Write attempts inside the caller's open write transaction."""
    conn.executemany(
        f"INSERT INTO attempts ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                a.route,
                a.seq,
                a.attempt,
                a.at,
                round(a.duration_ms, 3),
                a.outcome,
                a.status,
                a.error,
                a.body[:BODY_EXCERPT] if a.body else None,
                a.endpoint,
            )
            for a in rows
        ],
    )


def record(store: Store, rows: Iterable[Attempt]) -> None:
    """Write attempts in a transaction of their own (tests, and callers with nothing else to write)."""
    with store.write() as conn:
        insert(conn, rows)


def _row(r: tuple[object, ...]) -> Attempt:
    body = r[8]
    return Attempt(
        str(r[0]),
        int(r[1]),  # type: ignore[call-overload]
        int(r[2]),  # type: ignore[call-overload]
        float(r[3]),  # type: ignore[arg-type]
        float(r[4] or 0.0),  # type: ignore[arg-type]
        str(r[5]),
        None if r[6] is None else int(r[6]),  # type: ignore[call-overload]
        None if r[7] is None else str(r[7]),
        None if body is None else bytes(body),  # type: ignore[call-overload]
        None if r[9] is None else str(r[9]),
    )


def for_seq(store: Store, seq: int, route: str | None = None) -> list[Attempt]:
    """Every attempt recorded for event ``seq`` (one route's, or every route's), oldest first."""
    sql = f"SELECT {_COLS} FROM attempts WHERE seq = ?"
    args: list[object] = [seq]
    if route is not None:
        sql += " AND route = ?"
        args.append(route)
    return [_row(r) for r in store.conn.execute(sql + " ORDER BY id", args)]


def recent(store: Store, route: str | None = None, limit: int = 50) -> list[Attempt]:
    """The newest ``limit`` attempts (newest first), optionally of one route."""
    sql = f"SELECT {_COLS} FROM attempts"
    args: list[object] = []
    if route is not None:
        sql += " WHERE route = ?"
        args.append(route)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in store.conn.execute(sql, args)]


def delete_gone(conn: sqlite3.Connection, after: int, upto: int) -> int:
    """Inside the caller's transaction: drop the attempts of seqs in ``(after, upto]`` whose
    event is no longer in the log (retention just deleted it)."""
    cur = conn.execute(
        "DELETE FROM attempts WHERE seq > ? AND seq <= ? AND seq NOT IN "
        "(SELECT seq FROM events WHERE seq > ? AND seq <= ?)",
        (after, upto, after, upto),
    )
    return int(cur.rowcount)


def delete_route(conn: sqlite3.Connection, route: str) -> None:
    """Inside the caller's transaction: a route removed with ``--purge`` takes its history along."""
    conn.execute("DELETE FROM attempts WHERE route = ?", (route,))


__all__ = ["BODY_EXCERPT", "Attempt", "delete_gone", "delete_route", "for_seq", "insert", "recent", "record"]
