"""The single-worker lease: one row that a worker holds by refreshing its heartbeat.

A lease whose heartbeat is older than ``ttl`` is free, so a standby worker takes over
within ``ttl`` plus its polling interval after the holder dies (even by kill -9).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from evroute.store.db import LEASE, Store

TTL = 6.0


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    pid: int
    host: str
    since: float
    heartbeat: float

    def alive(self, now: float, ttl: float = TTL) -> bool:
        return now - self.heartbeat < ttl


def _host() -> str:
    import socket  # only a worker needs it: cursor writes import this module on the publish path

    return socket.gethostname()


def holder_id() -> str:
    return f"{_host()}:{os.getpid()}:{time.monotonic_ns()}"


def acquire(store: Store, holder: str, now: float | None = None, ttl: float = TTL) -> bool:
    """Take the lease if it is free, expired or already ours."""
    stamp = time.time() if now is None else now
    with store.write() as conn:
        row = conn.execute(
            "SELECT holder, heartbeat, pid, host FROM lease WHERE name = ?", (LEASE,)
        ).fetchone()
        if row is not None and row[0] != holder and stamp - row[1] < ttl and _alive(row[2], row[3]):
            return False
        since = stamp if row is None or row[0] != holder else None
        conn.execute(
            "INSERT INTO lease (name, holder, pid, host, since, heartbeat) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, host = excluded.host, "
            "since = coalesce(?, since), heartbeat = excluded.heartbeat",
            (LEASE, holder, os.getpid(), _host(), stamp, stamp, since),
        )
    return True


def renew(store: Store, holder: str, now: float | None = None) -> bool:
    """Refresh our heartbeat; False means we lost the lease."""
    stamp = time.time() if now is None else now
    with store.write() as conn:
        cur = conn.execute(
            "UPDATE lease SET heartbeat = ? WHERE name = ? AND holder = ?", (stamp, LEASE, holder)
        )
        return cur.rowcount == 1


def _alive(pid: int, host: str) -> bool:
    """False only when the holder is on this host and its process is gone (killed, crashed):
    then the lease is free at once instead of after the heartbeat TTL."""
    if host != _host():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release(store: Store, holder: str) -> None:
    with store.write() as conn:
        conn.execute("DELETE FROM lease WHERE name = ? AND holder = ?", (LEASE, holder))


def current(store: Store) -> Lease | None:
    row = store.conn.execute(
        "SELECT holder, pid, host, since, heartbeat FROM lease WHERE name = ?", (LEASE,)
    ).fetchone()
    return Lease(*row) if row else None
