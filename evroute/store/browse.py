"""Reads for people browsing the store (the web console): filtered listings that stay fast on
millions of events. Each query walks an index from the newest end and stops at ``limit``."""

from __future__ import annotations

from evroute.store import log
from evroute.store.db import Store
from evroute.store.deadletters import _COLS as _DL_COLS
from evroute.store.deadletters import DeadLetter
from evroute.store.deadletters import _row as _dl_row
from evroute.store.log import StoredEvent


def events(
    store: Store,
    *,
    broker: str | None = None,
    type: str | None = None,
    source: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[StoredEvent]:
    """The newest ``limit`` events (newest first) matching every filter given, below seq ``before``."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("broker", broker), ("type", type), ("source", source)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = store.conn.execute(
        f"SELECT {log._COLUMNS} FROM events {clause} ORDER BY seq DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [log._event(r) for r in rows]


def last_of_type(store: Store, type: str) -> StoredEvent | None:
    row = store.conn.execute(
        f"SELECT {log._COLUMNS} FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1", (type,)
    ).fetchone()
    return log._event(row) if row else None


def types(store: Store, limit: int = 50) -> list[str]:
    """Event types seen among the newest events (for the send form's choice)."""
    rows = store.conn.execute(
        "SELECT DISTINCT type FROM (SELECT type FROM events ORDER BY seq DESC LIMIT 2000) LIMIT ?", (limit,)
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def dead_letters(
    store: Store, *, route: str | None = None, reason: str | None = None, limit: int = 200
) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (newest first), of one route and/or reason."""
    where: list[str] = []
    args: list[object] = []
    if route:
        where.append("route = ?")
        args.append(route)
    if reason:
        where.append("reason = ?")
        args.append(reason)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = store.conn.execute(
        f"SELECT {_DL_COLS} FROM dead_letters {clause} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [_dl_row(r) for r in rows]


def dead_letter_total(store: Store) -> int:
    return int(store.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def count_from(store: Store, broker: str, position: int) -> int:
    """How many events of ``broker`` lie after ``position`` (a reset's preview)."""
    return log.count_after(store, broker, position)


__all__ = [
    "count_from",
    "dead_letter_total",
    "dead_letters",
    "events",
    "last_of_type",
    "reset_preview",
    "types",
]


def count_older(store: Store, cutoff: float) -> int:
    """Events published before ``cutoff``: at most what one retention pass may delete."""
    return int(
        store.conn.execute("SELECT count(*) FROM events WHERE published_at < ?", (cutoff,)).fetchone()[0]
    )


def reset_preview(store: Store, route: str, to: str) -> tuple[int, int]:
    """Where ``subscribe reset ROUTE --to TO`` would put the cursor, and how many events of the
    route's broker lie after it (what the route would see again, or still see)."""
    from evroute.errors import NotFound
    from evroute.store import cursors

    cursor = cursors.get(store, route)
    if cursor is None:
        raise NotFound(f"route '{route}' has no cursor yet (is it in the routes file?)")
    position = cursors._position(store, cursor.broker, to)
    return position, log.count_after(store, cursor.broker, position)
