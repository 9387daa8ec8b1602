"""The event log: append events to a broker, read them back after a seq.

Rows keep the attributes as columns (so listing and filtering by type needs no JSON) and
the data as the raw bytes that were published.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from evroute.cloudevent import CloudEvent
from evroute.store.db import Store
from evroute.store.publishing import INSERT as _INSERT
from evroute.store.publishing import event_row
from evroute.store.records import AppendResult, StoredEvent

_COLUMNS = "seq, broker, published_at, id, source, type, subject, time, datacontenttype, dataschema, extensions, data"
_OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")


def _row(broker: str, event: CloudEvent, now: float) -> tuple[object, ...]:
    return event_row(broker, event.attributes, event.data, now)


def append(store: Store, broker: str, events: Sequence[CloudEvent], now: float | None = None) -> AppendResult:
    """Store ``events`` in one transaction: all of them or none. Duplicates are skipped."""
    stamp = time.time() if now is None else now
    conn = store.conn
    with store.write():
        if len(events) <= 8:
            seqs: list[int | None] = []
            for event in events:
                cur = conn.execute(_INSERT, _row(broker, event, stamp))
                seqs.append(cur.lastrowid if cur.rowcount == 1 else None)
            stored = sum(1 for s in seqs if s is not None)
            return AppendResult(stored, len(events) - stored, tuple(seqs))
        before = conn.total_changes
        conn.executemany(_INSERT, [_row(broker, e, stamp) for e in events])
        stored = conn.total_changes - before
    return AppendResult(stored, len(events) - stored)


def append_each(
    store: Store, requests: Sequence[tuple[str, Sequence[CloudEvent]]], now: float | None = None
) -> list[AppendResult]:
    """Store several requests' events, in order, in one transaction: all of them or none.
    Each request's (stored, duplicates) is counted on its own (no seqs: they are not needed to
    split the counts). One commit for many requests is what the ingress's throughput rests on."""
    stamp = time.time() if now is None else now
    conn = store.conn
    results: list[AppendResult] = []
    with store.write():
        for broker, events in requests:
            before = conn.total_changes
            if len(events) == 1:
                conn.execute(_INSERT, _row(broker, events[0], stamp))
            else:
                conn.executemany(_INSERT, [_row(broker, e, stamp) for e in events])
            stored = conn.total_changes - before
            results.append(AppendResult(stored, len(events) - stored))
    return results


def insert(store: Store, broker: str, events: Iterable[CloudEvent], now: float) -> int:
    """Insert inside the caller's open ``store.write()`` transaction; returns how many were new.

    For appends too large to hold in memory at once (``publish --file``): the caller streams
    chunks through here and commits, or rolls back, once.
    """
    conn = store.conn
    before = conn.total_changes
    conn.executemany(_INSERT, [_row(broker, e, now) for e in events])
    return conn.total_changes - before


def _event(row: Sequence[Any]) -> StoredEvent:
    attrs: dict[str, Any] = {"specversion": "1.0", "id": row[3], "source": row[4], "type": row[5]}
    for name, value in zip(_OPTIONAL, row[6:10], strict=True):
        if value is not None:
            attrs[name] = value
    if row[10]:
        attrs.update(json.loads(str(row[10])))
    data = row[11]
    return StoredEvent(
        int(row[0]),
        str(row[1]),
        float(row[2]),
        CloudEvent(attrs, bytes(data) if data is not None else None),
    )


def read_after(store: Store, broker: str, after: int, limit: int = 256) -> list[StoredEvent]:
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE broker = ? AND seq > ? ORDER BY seq LIMIT ?",
        (broker, after, limit),
    ).fetchall()
    return [_event(r) for r in rows]


def get(store: Store, seq: int) -> StoredEvent | None:
    row = store.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
    return _event(row) if row else None


def find(store: Store, event_id: str, broker: str | None = None) -> list[StoredEvent]:
    sql = f"SELECT {_COLUMNS} FROM events WHERE id = ?"
    args: list[object] = [event_id]
    if broker is not None:
        sql += " AND broker = ?"
        args.append(broker)
    return [_event(r) for r in store.conn.execute(sql + " ORDER BY seq", args)]


def listing(
    store: Store, broker: str | None = None, type: str | None = None, limit: int = 20
) -> list[StoredEvent]:
    """The newest ``limit`` events (oldest first), optionally of one broker and type."""
    where: list[str] = []
    args: list[object] = []
    if broker is not None:
        where.append("broker = ?")
        args.append(broker)
    if type is not None:
        where.append("type = ?")
        args.append(type)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM events {clause} ORDER BY seq DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [_event(r) for r in reversed(rows)]


def last_seq(store: Store) -> int:
    """The highest seq ever assigned (deleted rows included): where `start: latest` begins."""
    row = store.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


def count_after(store: Store, broker: str, after: int) -> int:
    return int(
        store.conn.execute(
            "SELECT count(*) FROM events WHERE broker = ? AND seq > ?", (broker, after)
        ).fetchone()[0]
    )


def max_seq(store: Store, broker: str) -> int:
    """The newest seq stored in ``broker`` (0 if none): one seek on the (broker, seq) index."""
    row = store.conn.execute("SELECT max(seq) FROM events WHERE broker = ?", (broker,)).fetchone()
    return int(row[0]) if row[0] is not None else 0


def brokers(store: Store) -> Iterable[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT broker FROM events")]
