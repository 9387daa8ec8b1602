"""Opening the SQLite file: WAL mode, busy timeout, durability, short write transactions.

Every write is one ``BEGIN IMMEDIATE … COMMIT``: taking the write lock up front means a
writer waits its turn (``busy_timeout``) instead of failing half way with "database is
locked" when several processes publish at once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from evroute.errors import LeaseLost, StoreError
from evroute.store.schema import ensure_schema

BUSY_TIMEOUT_MS = 30_000
LEASE = "worker"  # the name of the one lease row (see evroute.store.lease)


class Store:
    """One connection to an evroute database (use one per thread)."""

    def __init__(self, path: str, *, durability: str = "normal", create: bool = True) -> None:
        self.path = path
        if not create and not os.path.exists(path):
            raise StoreError(f"database '{path}' does not exist (run `evroute init` or pass --db)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StoreError(f"cannot create database '{path}': folder '{folder}' does not exist")
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.set_durability(durability)
            ensure_schema(self.conn)
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open database '{path}': {exc} (check the path and its permissions)"
            ) from None

    def set_durability(self, durability: str) -> None:
        # normal: WAL + synchronous=NORMAL survives any process crash; full: fsync every commit.
        level = "FULL" if durability == "full" else "NORMAL"
        self.conn.execute(f"PRAGMA synchronous = {level}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction, taken with the write lock up front."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to database '{self.path}': {exc}") from None
        try:
            yield self.conn
        except sqlite3.Error as exc:
            # Any SQLite error inside the transaction (a full disk, an I/O error, a constraint)
            # is a store fault like a failed COMMIT: rolled back, reported as StoreError.
            self._rollback()
            raise StoreError(f"cannot write to database '{self.path}': {exc}") from None
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot write to database '{self.path}': {exc}") from None

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back already (e.g. after an I/O error)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read across several statements."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def manual_checkpoints(self) -> None:
        """This connection never checkpoints by itself (see :func:`checkpoint`)."""
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")

    def data_version(self) -> int:
        """Changes whenever another connection commits: the worker's cheap wake-up check."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def writable(self, wait_ms: int = 250) -> bool:
        """Can we take the write lock now? Waits at most ``wait_ms`` (health checks must answer)."""
        self.conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            with self.write() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def checkpoint(path: str) -> None:
    """A passive WAL checkpoint on a connection of its own (for a thread: it may take tens
    of milliseconds and must not run in the delivery loop). Raises StoreError."""
    try:
        conn = sqlite3.connect(path, timeout=1.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"checkpoint of '{path}' skipped: {exc}") from None


def guard_lease(conn: sqlite3.Connection, holder: str | None) -> None:
    """Inside a write transaction: refuse the write unless ``holder`` holds the worker lease.

    A worker that stalled past the lease's TTL and was replaced must not move cursors or
    write retries and dead letters behind its successor's back. ``None`` (tools, tests
    without a lease) skips the check. Lives here, not in ``lease``, so that the publish path
    (which writes cursors) imports nothing more.
    """
    if holder is None:
        return
    row = conn.execute("SELECT holder FROM lease WHERE name = ?", (LEASE,)).fetchone()
    if row is None or row[0] != holder:
        raise LeaseLost("another worker holds the lease now; this worker stops delivering")
