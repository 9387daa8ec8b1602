"""Per-route cursors and counters.

A cursor says: every event of the route's broker with ``seq <= position`` is finished for
the route (delivered, filtered out, on the retry schedule, or dead-lettered). The worker
commits it in batches together with the route's counters. ``epoch`` changes when a user
moves a cursor by hand; the worker's commit is conditional on the epoch it read, so a
``subscribe reset`` while the worker runs is never overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from evroute.errors import InvalidInput, NotFound
from evroute.store import log
from evroute.store.base import Cursor, Progress
from evroute.store.db import Store, guard_lease

if TYPE_CHECKING:
    from evroute.store.outcomes import Pending

_COLS = (
    "route, broker, position, epoch, created_at, updated_at, delivered, failed, "
    "last_error, last_error_at, in_flight, breaker"
)


def ensure(store: Store, routes: Iterable[tuple[str, str, str]], now: float | None = None) -> list[str]:
    """Create cursors for routes seen for the first time; ``routes`` is (name, broker, start).

    ``start: latest`` places the cursor at the end of the log now; ``earliest`` at 0.
    Returns the names created. A route whose broker changed keeps its name but restarts at
    its ``start`` on the new broker (seqs are global, so the old position would skip nothing
    of value and might skip events).
    """
    wanted = list(routes)
    if not wanted:
        return []
    existing = {r[0]: r[1] for r in store.conn.execute("SELECT route, broker FROM cursors")}
    todo = [(n, b, s) for n, b, s in wanted if existing.get(n) != b]
    if not todo:
        return []
    stamp = time.time() if now is None else now
    created = []
    with store.write() as conn:
        end = log.last_seq(store)
        existing = {r[0]: r[1] for r in conn.execute("SELECT route, broker FROM cursors")}
        for name, broker, start in todo:
            if existing.get(name) == broker:
                continue
            position = 0 if start == "earliest" else end
            conn.execute(
                "INSERT INTO cursors (route, broker, position, created_at, updated_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(route) DO UPDATE SET broker = excluded.broker, position = excluded.position, "
                "epoch = epoch + 1, updated_at = excluded.updated_at",
                (name, broker, position, stamp, stamp),
            )
            created.append(name)
    return created


def get(store: Store, route: str) -> Cursor | None:
    row = store.conn.execute(f"SELECT {_COLS} FROM cursors WHERE route = ?", (route,)).fetchone()
    return Cursor(*row) if row else None


def all_cursors(store: Store) -> dict[str, Cursor]:
    return {row[0]: Cursor(*row) for row in store.conn.execute(f"SELECT {_COLS} FROM cursors")}


def epochs(store: Store) -> dict[str, int]:
    """route -> epoch: a changed epoch means the cursor was moved by hand."""
    return {r[0]: int(r[1]) for r in store.conn.execute("SELECT route, epoch FROM cursors")}


def commit(
    store: Store,
    progress: Iterable[Progress],
    now: float | None = None,
    recent: Sequence[Pending] = (),
    holder: str | None = None,
) -> list[str]:
    """Commit many routes' positions and counters in one transaction, with the ``recent``
    delivery outcomes since the last commit (the ring ``evroute tail`` follows).

    Returns the routes whose epoch moved under them (a reset happened): the caller must
    re-read those cursors instead of trusting its own position. ``holder``: the worker's
    lease id; the commit is refused if another worker holds the lease.
    """
    stamp = time.time() if now is None else now
    moved = []
    with store.write() as conn:
        guard_lease(conn, holder)
        if recent:
            from evroute.store import outcomes  # not on `publish`'s path (it creates cursors)

            outcomes.insert(conn, recent)
        for p in progress:
            cur = conn.execute(
                "UPDATE cursors SET position = max(position, ?), updated_at = ?, delivered = delivered + ?, "
                "failed = failed + ?, last_error = coalesce(?, last_error), "
                "last_error_at = coalesce(?, last_error_at), in_flight = ?, breaker = ? "
                "WHERE route = ? AND epoch = ?",
                (
                    p.position,
                    stamp,
                    p.delivered,
                    p.failed,
                    p.last_error,
                    p.last_error_at,
                    p.in_flight,
                    p.breaker,
                    p.route,
                    p.epoch,
                ),
            )
            if cur.rowcount == 0:
                moved.append(p.route)
    return moved


def reset(store: Store, route: str, to: str, now: float | None = None, *, drop_retries: bool = False) -> int:
    """Move a route's cursor to earliest | latest | SEQ | TIMESTAMP; returns the new position.

    Scheduled retries are kept (they are events the route already took) unless
    ``drop_retries``; dead-letter replays are always kept.
    """
    stamp = time.time() if now is None else now
    with store.write() as conn:
        row = conn.execute("SELECT broker FROM cursors WHERE route = ?", (route,)).fetchone()
        if row is None:
            raise NotFound(f"route '{route}' has no cursor yet (is it in the routes file?)")
        broker = row[0]
        position = _position(store, broker, to)
        conn.execute(
            "UPDATE cursors SET position = ?, epoch = epoch + 1, updated_at = ? WHERE route = ?",
            (position, stamp, route),
        )
        if drop_retries:
            conn.execute("DELETE FROM retries WHERE route = ? AND dlq_id IS NULL", (route,))
    return position


def _position(store: Store, broker: str, to: str) -> int:
    if to == "earliest":
        return 0
    if to == "latest":
        return log.last_seq(store)
    if to.isdigit():
        # --to SEQ: the next event delivered is SEQ itself, so the cursor sits just before it.
        last = log.last_seq(store)
        if int(to) > last + 1:
            raise InvalidInput(
                f"--to {to} is past the end of the log (the last seq is {last}; use --to latest to skip everything)"
            )
        return max(int(to) - 1, 0)
    from evroute.clock import parse_time  # a timestamp: the first event published at or after it

    moment = parse_time(to)
    if moment is None:
        raise InvalidInput(
            f"bad --to {to!r} (allowed: earliest, latest, a seq number, or an RFC 3339 time like 2026-01-02T15:04:05Z)"
        )
    row = store.conn.execute(
        "SELECT min(seq) FROM events WHERE broker = ? AND published_at >= ?", (broker, moment)
    ).fetchone()
    if row[0] is None:
        return log.last_seq(store)
    return int(row[0]) - 1


def delete(store: Store, route: str) -> None:
    with store.write() as conn:
        conn.execute("DELETE FROM cursors WHERE route = ?", (route,))
        conn.execute("DELETE FROM retries WHERE route = ?", (route,))
        conn.execute("DELETE FROM dead_letters WHERE route = ?", (route,))
        conn.execute("DELETE FROM route_pace WHERE route = ?", (route,))
        from evroute.store import attempts

        attempts.delete_route(conn, route)
