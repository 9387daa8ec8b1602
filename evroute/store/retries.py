"""The durable retry schedule: (route, seq) -> attempts made, when the next one is due.

A retry row survives restarts, so a worker that comes back resumes the attempt count and
the due time instead of starting the count again. Rows with ``dlq_id`` come from
``dlq replay`` and take their event from the dead letter's own copy.
"""

from __future__ import annotations

from collections.abc import Iterable

from evroute.store import attempts as attempt_log
from evroute.store.base import Retry
from evroute.store.db import Store, guard_lease

_COLS = "route, seq, attempt, due_at, first_failed_at, last_status, last_error, dlq_id"


def schedule(
    store: Store,
    retries: Iterable[Retry],
    holder: str | None = None,
    attempts: Iterable[attempt_log.Attempt] = (),
) -> None:
    """Insert or move retries; an existing row keeps the larger attempt count. ``attempts``
    (the failed attempts that led here) are recorded in the same transaction.

    ``holder``: the worker's lease id; the write is refused if another worker holds the lease.
    """
    with store.write() as conn:
        guard_lease(conn, holder)
        attempt_log.insert(conn, attempts)
        conn.executemany(
            f"INSERT INTO retries ({_COLS}) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(route, seq) DO UPDATE SET "
            "attempt = max(attempt, excluded.attempt), due_at = excluded.due_at, "
            "last_status = excluded.last_status, last_error = excluded.last_error, "
            "first_failed_at = coalesce(first_failed_at, excluded.first_failed_at), "
            "dlq_id = coalesce(excluded.dlq_id, dlq_id)",
            [
                (
                    r.route,
                    r.seq,
                    r.attempt,
                    r.due_at,
                    r.first_failed_at,
                    r.last_status,
                    r.last_error,
                    r.dlq_id,
                )
                for r in retries
            ],
        )


def due(store: Store, now: float, routes: Iterable[str], limit: int = 256) -> list[Retry]:
    names = list(routes)
    if not names:
        return []
    marks = ",".join("?" * len(names))
    rows = store.conn.execute(
        f"SELECT {_COLS} FROM retries WHERE due_at <= ? AND route IN ({marks}) ORDER BY due_at LIMIT ?",
        (now, *names, limit),
    ).fetchall()
    return [Retry(*r) for r in rows]


def due_for_route(
    store: Store, route: str, now: float, limit: int, *, replays_or_upto: int | None = None
) -> list[Retry]:
    """One route's due retries, oldest due first, at most ``limit``.

    ``replays_or_upto``: for an ordered route, whose head event is retried in place by its
    dispatcher, only dead-letter replays and rows at or behind that seq.
    """
    if limit <= 0:
        return []
    sql = f"SELECT {_COLS} FROM retries WHERE route = ? AND due_at <= ?"
    args: list[object] = [route, now]
    if replays_or_upto is not None:
        sql += " AND (dlq_id IS NOT NULL OR seq <= ?)"
        args.append(replays_or_upto)
    rows = store.conn.execute(sql + " ORDER BY due_at LIMIT ?", (*args, limit)).fetchall()
    return [Retry(*r) for r in rows]


def next_due(store: Store, routes: Iterable[str], after: float | None = None) -> float | None:
    """The earliest due time among ``routes`` (only those later than ``after``, if given)."""
    names = list(routes)
    if not names:
        return None
    marks = ",".join("?" * len(names))
    sql = f"SELECT min(due_at) FROM retries WHERE route IN ({marks})"
    args: list[object] = list(names)
    if after is not None:
        sql += " AND due_at > ?"
        args.append(after)
    row = store.conn.execute(sql, args).fetchone()
    return None if row[0] is None else float(row[0])


def forget(
    store: Store,
    route: str,
    seq: int,
    replaced: int | None,
    holder: str | None = None,
    attempts: Iterable[attempt_log.Attempt] = (),
) -> None:
    """A retried (or replayed) event was delivered: drop its retry row and the dead letter it
    replays, in one transaction, with the success that ends its run of failures (``attempts``)."""
    with store.write() as conn:
        guard_lease(conn, holder)
        attempt_log.insert(conn, attempts)
        conn.execute("DELETE FROM retries WHERE route = ? AND seq = ?", (route, seq))
        if replaced is not None:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (replaced,))


def scheduled(store: Store, route: str) -> int:
    """How many retries of log events (dead-letter replays not counted) ``route`` has."""
    row = store.conn.execute(
        "SELECT count(*) FROM retries WHERE route = ? AND dlq_id IS NULL", (route,)
    ).fetchone()
    return int(row[0])


def get(store: Store, route: str, seq: int) -> Retry | None:
    row = store.conn.execute(
        f"SELECT {_COLS} FROM retries WHERE route = ? AND seq = ?", (route, seq)
    ).fetchone()
    return Retry(*row) if row else None


def for_seq(store: Store, seq: int) -> list[Retry]:
    return [Retry(*r) for r in store.conn.execute(f"SELECT {_COLS} FROM retries WHERE seq = ?", (seq,))]


def remove(store: Store, keys: Iterable[tuple[str, int]]) -> None:
    with store.write() as conn:
        conn.executemany("DELETE FROM retries WHERE route = ? AND seq = ?", list(keys))


# A delayed event's first delivery waits on the schedule like a retry with no attempt made yet
# and no failure: that is what tells it apart from a retry (see evroute/delay.py).
SCHEDULED = "attempt = 0 AND dlq_id IS NULL AND last_error IS NULL"


def summary(store: Store) -> dict[str, tuple[int, float | None]]:
    """route -> (scheduled retries, next due)."""
    sql = f"SELECT route, count(*), min(due_at) FROM retries WHERE NOT ({SCHEDULED}) GROUP BY route"
    return {r[0]: (int(r[1]), r[2]) for r in store.conn.execute(sql)}


def is_scheduled(retry: Retry) -> bool:
    """A delayed event waiting for its first delivery, not a retry."""
    return retry.attempt == 0 and retry.dlq_id is None and retry.last_error is None


def route_summary(store: Store, route: str) -> tuple[int, float | None, int, float | None]:
    """(retries waiting, next retry due, delayed events scheduled, next due) of one route.
    The primary key starts with route: a range of the key, whatever the table's size."""
    row = store.conn.execute(
        f"SELECT count(*) FILTER (WHERE NOT ({SCHEDULED})), min(due_at) FILTER (WHERE NOT ({SCHEDULED})), "
        f"count(*) FILTER (WHERE {SCHEDULED}), min(due_at) FILTER (WHERE {SCHEDULED}) "
        "FROM retries WHERE route = ?",
        (route,),
    ).fetchone()
    return (
        int(row[0]),
        None if row[1] is None else float(row[1]),
        int(row[2]),
        None if row[3] is None else float(row[3]),
    )


def count(store: Store, routes: Iterable[str] | None = None) -> int:
    if routes is None:
        return int(store.conn.execute("SELECT count(*) FROM retries").fetchone()[0])
    names = list(routes)
    if not names:
        return 0
    marks = ",".join("?" * len(names))
    return int(
        store.conn.execute(f"SELECT count(*) FROM retries WHERE route IN ({marks})", names).fetchone()[0]
    )
