"""Dead letters: events a route gave up on, with why. Each row keeps its own copy of the
event (structured JSON), so retention may delete the log row and a replay still works."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from evroute.cloudevent import from_json, to_json
from evroute.errors import NotFound
from evroute.store import attempts as attempt_log
from evroute.store.base import DeadLetter, NewDeadLetter
from evroute.store.db import Store, guard_lease
from evroute.store.retries import Retry

_COLS = (
    "id, route, broker, seq, event, attempts, status, reason, error, body, first_failed_at, dead_at, "
    "replayed_at, dls_outcome"
)


def _row(r: Any) -> DeadLetter:
    return DeadLetter(
        r[0],
        r[1],
        r[2],
        r[3],
        from_json(bytes(r[4])),
        *r[5:],
    )


def add(
    store: Store,
    letters: Iterable[NewDeadLetter],
    remove_retries: bool = True,
    attempts: Iterable[attempt_log.Attempt] = (),
) -> list[int]:
    """Store dead letters (and drop their retry rows) in one transaction; returns their ids.
    ``attempts`` (the last attempt that failed) are recorded in the same transaction."""
    ids = []
    with store.write() as conn:
        attempt_log.insert(conn, attempts)
        for d in letters:
            cur = conn.execute(
                "INSERT INTO dead_letters (route, broker, seq, event, event_id, event_type, attempts, status, "
                "reason, error, body, first_failed_at, dead_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    d.route,
                    d.broker,
                    d.seq,
                    to_json(d.event),
                    d.event.id,
                    d.event.type,
                    d.attempts,
                    d.status,
                    d.reason,
                    d.error,
                    d.body,
                    d.first_failed_at,
                    d.dead_at,
                ),
            )
            ids.append(int(cur.lastrowid or 0))
            if remove_retries and d.seq is not None:
                conn.execute("DELETE FROM retries WHERE route = ? AND seq = ?", (d.route, d.seq))
    return ids


def bury(
    store: Store,
    letter: NewDeadLetter,
    key: int,
    replaced: int | None,
    holder: str | None = None,
    attempts: Iterable[attempt_log.Attempt] = (),
) -> int:
    """A route gives up on an event: store the dead letter, drop its retry row (``key`` is
    the retry row's seq) and the dead letter it replayed, all in one transaction, with the
    last failed ``attempts`` for the attempt history. Returns the id.
    """
    with store.write() as conn:
        guard_lease(conn, holder)
        attempt_log.insert(conn, attempts)
        cur = conn.execute(
            "INSERT INTO dead_letters (route, broker, seq, event, event_id, event_type, attempts, status, "
            "reason, error, body, first_failed_at, dead_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                letter.route,
                letter.broker,
                letter.seq,
                to_json(letter.event),
                letter.event.id,
                letter.event.type,
                letter.attempts,
                letter.status,
                letter.reason,
                letter.error,
                letter.body,
                letter.first_failed_at,
                letter.dead_at,
            ),
        )
        conn.execute("DELETE FROM retries WHERE route = ? AND seq = ?", (letter.route, key))
        if replaced is not None:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (replaced,))
        return int(cur.lastrowid or 0)


def get(store: Store, dlq_id: int) -> DeadLetter:
    row = store.conn.execute(f"SELECT {_COLS} FROM dead_letters WHERE id = ?", (dlq_id,)).fetchone()
    if row is None:
        raise NotFound(f"no dead letter with id {dlq_id} (see `evroute dlq list`)")
    return _row(row)


def find(store: Store, dlq_id: int) -> DeadLetter | None:
    row = store.conn.execute(f"SELECT {_COLS} FROM dead_letters WHERE id = ?", (dlq_id,)).fetchone()
    return _row(row) if row else None


def listing(store: Store, route: str | None = None, limit: int | None = None) -> list[DeadLetter]:
    sql = f"SELECT {_COLS} FROM dead_letters"
    args: list[object] = []
    if route is not None:
        sql += " WHERE route = ?"
        args.append(route)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [_row(r) for r in store.conn.execute(sql, args)]


def for_seq(store: Store, seq: int) -> list[DeadLetter]:
    return [_row(r) for r in store.conn.execute(f"SELECT {_COLS} FROM dead_letters WHERE seq = ?", (seq,))]


def set_dls_outcome(store: Store, dlq_id: int, outcome: str) -> None:
    with store.write() as conn:
        conn.execute("UPDATE dead_letters SET dls_outcome = ? WHERE id = ?", (outcome, dlq_id))


def replay(store: Store, ids: Iterable[int], now: float | None = None) -> int:
    """Put dead letters back on their route's delivery path with a fresh attempt count.

    Each becomes a retry row due now that points at the dead letter (which holds the event);
    the worker removes the dead letter once the replay is delivered. Works with no worker
    running: the next one picks the rows up.
    """
    stamp = time.time() if now is None else now
    count = 0
    with store.write() as conn:
        for dlq_id in ids:
            row = conn.execute("SELECT route, seq FROM dead_letters WHERE id = ?", (dlq_id,)).fetchone()
            if row is None:
                raise NotFound(f"no dead letter with id {dlq_id} (see `evroute dlq list`)")
            route, seq = row
            # A replayed dead letter without a log seq gets a negative key: unique per dead letter.
            key = seq if seq is not None else -dlq_id
            conn.execute(
                "INSERT INTO retries (route, seq, attempt, due_at, first_failed_at, dlq_id) "
                "VALUES (?,?,0,?,NULL,?) ON CONFLICT(route, seq) DO UPDATE SET attempt = 0, "
                "due_at = excluded.due_at, dlq_id = excluded.dlq_id",
                (route, key, stamp, dlq_id),
            )
            conn.execute("UPDATE dead_letters SET replayed_at = ? WHERE id = ?", (stamp, dlq_id))
            count += 1
    return count


def delete(store: Store, ids: Iterable[int]) -> None:
    """Delete dead letters and any replay of them still scheduled (it would deliver nothing)."""
    keys = [(i,) for i in ids]
    with store.write() as conn:
        conn.executemany("DELETE FROM retries WHERE dlq_id = ?", keys)
        conn.executemany("DELETE FROM dead_letters WHERE id = ?", keys)


def purge(store: Store, route: str | None = None, before: float | None = None) -> int:
    where: list[str] = ["1"]
    args: list[object] = []
    if route is not None:
        where.append("route = ?")
        args.append(route)
    if before is not None:
        where.append("dead_at < ?")
        args.append(before)
    clause = " AND ".join(where)
    with store.write() as conn:
        # A replay still scheduled goes with its dead letter: it would deliver, fail and
        # dead-letter the event again after the user asked for it to be gone.
        conn.execute(
            f"DELETE FROM retries WHERE dlq_id IN (SELECT id FROM dead_letters WHERE {clause})", args
        )
        cur = conn.execute(f"DELETE FROM dead_letters WHERE {clause}", args)
        return int(cur.rowcount)


def counts(store: Store) -> dict[str, int]:
    return {
        r[0]: int(r[1]) for r in store.conn.execute("SELECT route, count(*) FROM dead_letters GROUP BY route")
    }


def retry_for(letter: DeadLetter) -> Retry:
    key = letter.seq if letter.seq is not None else -letter.id
    return Retry(letter.route, key, 0, 0.0, None, None, None, letter.id)
