"""What publishing needs of the SQLite file, and nothing more: the events table's row, the
routes cache, the cursors of routes seen for the first time, one event appended.

A single ``evroute publish`` is mostly Python starting up, so this module imports neither the
``CloudEvent`` class nor ``json``: a row is built from an event's attributes and data, and the
extension attributes are written as the JSON text ``json.dumps`` gives for them (the plain case
by hand; anything else through ``json``). :mod:`evroute.store.log` builds its rows here too, so
there is one row format; :class:`~evroute.store.sqlite.SqliteStore` delegates the routes cache
and the cursor check here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from evroute.errors import StoreError
from evroute.store.db import Store

INSERT = (
    "INSERT OR IGNORE INTO events (broker, id, source, type, subject, time, datacontenttype, "
    "dataschema, extensions, data, published_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
NOT_EXTENSIONS = frozenset(
    ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema")
)


def event_row(broker: str, attrs: Mapping[str, Any], data: bytes | None, now: float) -> tuple[object, ...]:
    """The ``events`` row of one event (validated attributes, data as bytes), for :data:`INSERT`."""
    ext = {k: v for k, v in attrs.items() if k not in NOT_EXTENSIONS}
    return (
        broker,
        attrs["id"],
        attrs["source"],
        attrs["type"],
        attrs.get("subject"),
        attrs.get("time"),
        attrs.get("datacontenttype"),
        attrs.get("dataschema"),
        encode_extensions(ext) if ext else None,
        data,
        now,
    )


def encode_extensions(ext: Mapping[str, Any]) -> str:
    """``json.dumps(ext, separators=(",", ":"), ensure_ascii=False)``, byte for byte.

    Names and string values without a quote, a backslash or an unprintable character are
    written as they are (that is all ``json`` would do with them); integers and booleans have
    one spelling. Anything else goes through ``json`` itself.
    """
    parts = []
    for key, value in ext.items():
        if not _plain(key):
            return _dumps(ext)
        if value is True:
            text = "true"
        elif value is False:
            text = "false"
        elif type(value) is int:
            text = str(value)
        elif type(value) is str and _plain(value):
            text = f'"{value}"'
        else:
            return _dumps(ext)
        parts.append(f'"{key}":{text}')
    return "{" + ",".join(parts) + "}"


def _plain(text: object) -> bool:
    return type(text) is str and text.isprintable() and '"' not in text and "\\" not in text


def _dumps(ext: Mapping[str, Any]) -> str:
    import json  # only for values that need escaping: a plain publish does not load it

    return json.dumps(ext, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- the routes cache


def cached_routes(db: Store, key: tuple[str, int, int, int]) -> str | None:
    """What :func:`remember_routes` kept under ``key`` (path, mtime_ns, size, inode), or None."""
    row = db.conn.execute(
        "SELECT config FROM routes_cache WHERE path = ? AND mtime_ns = ? AND size = ? AND inode = ?", key
    ).fetchone()
    return None if row is None else str(row[0])


def remember_routes(db: Store, key: tuple[str, int, int, int], config: str, now: float) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO routes_cache (path, mtime_ns, size, inode, config, loaded_at) "
            "VALUES (?,?,?,?,?,?)",
            (*key, config, now),
        )


def ensure_routes(db: Store, routes: Sequence[Sequence[str]], now: float | None = None) -> list[str]:
    """Create the cursors of routes, given as (name, broker, start), seen for the first time.
    Nearly always every cursor exists: one query finds that out without importing the cursors
    module. Returns the names created."""
    if not routes:
        return []
    try:
        existing = dict(db.conn.execute("SELECT route, broker FROM cursors").fetchall())
    except sqlite3.Error as exc:  # a file that is no database, a disk error: one StoreError
        raise StoreError(f"cannot write to database '{db.path}': {exc}") from None
    if all(existing.get(r[0]) == r[1] for r in routes):
        return []
    from evroute.store import cursors

    return cursors.ensure(db, [(r[0], r[1], r[2]) for r in routes], now)


# --------------------------------------------------------------------------- one publish


class PublishStore:
    """The SQLite file as one ``evroute publish`` of a single event uses it."""

    kind = "sqlite"

    def __init__(self, path: str, *, create: bool = True, durability: str = "normal") -> None:
        self.db = Store(path, durability=durability, create=create)

    def cached_routes(self, key: tuple[str, int, int, int]) -> str | None:
        return cached_routes(self.db, key)

    def remember_routes(self, key: tuple[str, int, int, int], config: str, now: float) -> None:
        remember_routes(self.db, key, config, now)

    def ensure_routes(self, routes: Sequence[Sequence[str]], now: float | None = None) -> list[str]:
        return ensure_routes(self.db, routes, now)

    def set_durability(self, durability: str) -> None:
        self.db.set_durability(durability)

    def append_one(
        self, broker: str, attrs: Mapping[str, Any], data: bytes | None, now: float | None = None
    ) -> int | None:
        """Store one event; its seq, or None when (broker, source, id) is stored already."""
        row = event_row(broker, attrs, data, time.time() if now is None else now)
        with self.db.write() as conn:
            cur = conn.execute(INSERT, row)
            return cur.lastrowid if cur.rowcount == 1 else None

    def close(self) -> None:
        self.db.close()


__all__ = [
    "INSERT",
    "NOT_EXTENSIONS",
    "PublishStore",
    "cached_routes",
    "encode_extensions",
    "ensure_routes",
    "event_row",
    "remember_routes",
]
