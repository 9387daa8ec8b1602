"""The database schema, created and upgraded by sqlite-utils migrations.

``PRAGMA user_version`` records how many migrations a file has: a process that finds it
current skips importing sqlite-utils at all, which keeps a single ``evroute publish`` fast.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA_VERSION = 4

_STATEMENTS_V1 = [
    # seq is AUTOINCREMENT so a seq is never reused, even after retention deletes the newest rows.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        broker TEXT NOT NULL,
        id TEXT NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        subject TEXT,
        time TEXT,
        datacontenttype TEXT,
        dataschema TEXT,
        extensions TEXT,
        data BLOB,
        published_at REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX events_identity ON events(broker, source, id)",
    "CREATE INDEX events_broker_seq ON events(broker, seq)",
    # One row per route ever seen. epoch changes when a user moves the cursor (subscribe reset),
    # so a running worker's next commit notices and re-reads instead of overwriting the move.
    """CREATE TABLE cursors (
        route TEXT PRIMARY KEY,
        broker TEXT NOT NULL,
        position INTEGER NOT NULL,
        epoch INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at REAL,
        in_flight INTEGER NOT NULL DEFAULT 0,
        breaker TEXT NOT NULL DEFAULT 'closed'
    )""",
    # The durable retry schedule: attempt = attempts already made.
    """CREATE TABLE retries (
        route TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        due_at REAL NOT NULL,
        first_failed_at REAL,
        last_status INTEGER,
        last_error TEXT,
        dlq_id INTEGER,
        PRIMARY KEY (route, seq)
    ) WITHOUT ROWID""",
    "CREATE INDEX retries_due ON retries(due_at)",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        broker TEXT NOT NULL,
        seq INTEGER,
        event BLOB NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        status INTEGER,
        reason TEXT NOT NULL,
        error TEXT,
        body BLOB,
        first_failed_at REAL,
        dead_at REAL NOT NULL,
        replayed_at REAL,
        dls_outcome TEXT
    )""",
    "CREATE INDEX dead_letters_route ON dead_letters(route, id)",
    "CREATE INDEX dead_letters_seq ON dead_letters(seq)",
    """CREATE TABLE lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        since REAL NOT NULL,
        heartbeat REAL NOT NULL
    )""",
]


_STATEMENTS_V2 = [
    # What `publish` needs from the routes file (route name, broker, start; settings), keyed by
    # the file's identity: a single publish then skips importing and running the YAML loader.
    # Only files that loaded without problems are remembered.
    """CREATE TABLE routes_cache (
        path TEXT PRIMARY KEY,
        mtime_ns INTEGER NOT NULL,
        size INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        config TEXT NOT NULL,
        loaded_at REAL NOT NULL
    )""",
]


_STATEMENTS_V3 = [
    # Attempt history (store/attempts.py): failed attempts and the final success of an event
    # that had failures. A first-try success writes no row. Looked up by event (seq) and
    # deleted with it by retention.
    """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        route TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,
        duration_ms REAL,
        outcome TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        body BLOB,
        endpoint TEXT
    )""",
    "CREATE INDEX attempts_seq ON attempts(seq, route)",
    # The newest delivery outcomes, every one (first-try successes too), as a bounded ring
    # (store/outcomes.py) written with the worker's batched cursor commit: what `evroute tail`
    # and the console's live views follow from another process.
    """CREATE TABLE outcomes (
        n INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        route TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        status INTEGER,
        latency_ms REAL
    )""",
    # Replies and edited replays, linked to the event they came from (store/links.py).
    """CREATE TABLE links (
        seq INTEGER PRIMARY KEY,
        parent INTEGER NOT NULL,
        kind TEXT NOT NULL,
        route TEXT
    )""",
    "CREATE INDEX links_parent ON links(parent)",
]


_STATEMENTS_FLOW = [
    # What the worker says about each route's pace (store/pace.py): held back by its rate limit
    # or a subscriber's Retry-After, and the endpoints of a consumer group with their counts.
    # Written when it changes, with the cursor commits; read by `status`.
    """CREATE TABLE IF NOT EXISTS route_pace (
        route TEXT PRIMARY KEY,
        throttled INTEGER NOT NULL DEFAULT 0,
        endpoints TEXT,
        updated_at REAL NOT NULL
    )""",
]


def _migrations() -> Any:
    from sqlite_utils import Migrations  # imported only when a file needs creating or upgrading

    migrations = Migrations("evroute")

    @migrations(name="0001_initial")
    def initial(db: Any) -> None:
        for statement in _STATEMENTS_V1:
            db.execute(statement)

    @migrations(name="0002_routes_cache")
    def routes_cache(db: Any) -> None:
        for statement in _STATEMENTS_V2:
            db.execute(statement)

    @migrations(name="0003_attempts")
    def attempt_history(db: Any) -> None:
        for statement in _STATEMENTS_V3:
            db.execute(statement)

    @migrations(name="0004_route_pace")
    def route_pace(db: Any) -> None:
        for statement in _STATEMENTS_FLOW:
            db.execute(statement)

    return migrations


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema. Safe with several processes starting at once."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    from sqlite_utils import Database

    # BEGIN IMMEDIATE serialises concurrent first starts: the loser waits (busy_timeout),
    # then finds the migrations applied. sqlite-utils nests its own work as savepoints.
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            _migrations().apply(Database(conn))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
