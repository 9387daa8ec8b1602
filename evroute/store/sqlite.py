"""The SQLite store behind the seam (:mod:`evroute.store.base`): one file, one writer at a time.

It delegates to the modules that own each table (log, cursors, retries, deadletters, lease)
and keeps their guarantees: watermark cursors committed for every route in one transaction
per batch, a durable retry schedule, no row per delivered event. The seam's value types are
imported only where they are built, so a single ``publish`` does not define them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from evroute.cloudevent import CloudEvent
from evroute.errors import InvalidInput
from evroute.store import log, publishing
from evroute.store.db import Store
from evroute.store.records import AppendResult, StoredEvent

if TYPE_CHECKING:
    from evroute.store.base import (
        Cursor,
        DeadLetter,
        NewDeadLetter,
        Presence,
        Progress,
        Retry,
        RoutesDoc,
        RouteStart,
    )


class SqliteStore:
    kind = "sqlite"
    exclusive = True

    def __init__(self, path: str, *, create: bool = True, durability: str = "normal") -> None:
        self.db = Store(path, durability=durability, create=create)
        self.path = path
        self.url = f"sqlite:{path}"

    @classmethod
    def over(cls, db: Store) -> SqliteStore:
        """The seam over a connection already open (the worker's, a test's)."""
        store = cls.__new__(cls)
        store.db, store.path, store.url = db, db.path, f"sqlite:{db.path}"
        return store

    # ------------------------------------------------------------------ the log

    def append(self, broker: str, events: Sequence[CloudEvent], now: float | None = None) -> AppendResult:
        return log.append(self.db, broker, events, now)

    def append_all(
        self, broker: str, chunks: Iterable[Sequence[CloudEvent]], now: float | None = None
    ) -> AppendResult:
        import time

        stamp = time.time() if now is None else now
        stored = total = 0
        with self.db.write():
            for chunk in chunks:
                total += len(chunk)
                stored += log.insert(self.db, broker, chunk, stamp)
        return AppendResult(stored, total - stored)

    def event(self, seq: int) -> StoredEvent | None:
        return log.get(self.db, seq)

    def find(self, event_id: str, broker: str | None = None) -> list[StoredEvent]:
        return log.find(self.db, event_id, broker)

    def events(
        self, broker: str | None = None, type: str | None = None, limit: int = 20
    ) -> list[StoredEvent]:
        return log.listing(self.db, broker, type, limit)

    def lag(self, broker: str, position: int) -> int:
        return log.count_after(self.db, broker, position)

    # ------------------------------------------------------------------ positions

    def ensure_routes(self, routes: Sequence[RouteStart], now: float | None = None) -> list[str]:
        """Create the cursors of routes seen for the first time (see :mod:`evroute.store.publishing`)."""
        return publishing.ensure_routes(self.db, routes, now)

    def cursor(self, route: str) -> Cursor | None:
        from evroute.store import cursors

        return cursors.get(self.db, route)

    def cursors(self) -> dict[str, Cursor]:
        from evroute.store import cursors

        return cursors.all_cursors(self.db)

    def reset(self, route: str, to: str, now: float | None = None, *, drop_retries: bool = False) -> int:
        from evroute.store import cursors

        return cursors.reset(self.db, route, to, now, drop_retries=drop_retries)

    def forget(self, route: str) -> None:
        from evroute.store import cursors

        cursors.delete(self.db, route)

    # ------------------------------------------------------------------ retries waiting

    def retry_state(self, route: str, seq: int) -> Retry | None:
        from evroute.store import retries

        return retries.get(self.db, route, seq)

    def scheduled(self, route: str) -> int:
        from evroute.store import retries

        return retries.scheduled(self.db, route)

    def last_outcome(self) -> int:
        from evroute.store import outcomes

        return outcomes.last(self.db)

    def recent_outcomes(self, after: int, limit: int = 1000) -> list[Any]:
        from evroute.store import outcomes

        return outcomes.after(self.db, after, limit)

    def changed(self) -> int:
        return self.db.data_version()

    def attempts_of(self, seq: int) -> list[Any]:
        from evroute.store import attempts

        return list(attempts.for_seq(self.db, seq))

    def retry_summary(self, routes: Sequence[str] | None = None) -> dict[str, tuple[int, float | None]]:
        from evroute.store import retries

        if routes is None:
            return retries.summary(self.db)
        found = {}
        for route in routes:
            # The retries primary key starts with route: a range of the key, whatever the table's size.
            waiting, due, _, _ = retries.route_summary(self.db, route)
            if waiting:
                found[route] = (waiting, due)
        return found

    def delayed(self, routes: Sequence[str]) -> dict[str, int]:
        from evroute.store import retries

        found = {}
        for route in routes:
            count = retries.route_summary(self.db, route)[2]
            if count:
                found[route] = count
        return found

    def pace(self, route: str) -> Any:
        from evroute.store import pace

        return pace.get(self.db, route)

    def put_pace(self, paces: Sequence[Any]) -> None:
        from evroute.store import pace

        pace.put(self.db, paces)

    # ------------------------------------------------------------------ dead letters

    def dead_letters(self, route: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        from evroute.store import deadletters

        return deadletters.listing(self.db, route, limit)

    def dead_letter(self, dlq_id: int) -> DeadLetter:
        from evroute.store import deadletters

        return deadletters.get(self.db, dlq_id)

    def dead_letters_of(self, seq: int | None = None, event_id: str | None = None) -> list[DeadLetter]:
        """Dead letters of one log seq or one event id, oldest first."""
        from evroute.store import deadletters

        if seq is not None:
            return deadletters.for_seq(self.db, seq)
        rows = self.db.conn.execute("SELECT id FROM dead_letters WHERE event_id = ? ORDER BY id", (event_id,))
        return [deadletters.get(self.db, int(r[0])) for r in rows.fetchall()]

    def dead_letter_counts(self, routes: Sequence[str] | None = None) -> dict[str, int]:
        from evroute.store import deadletters

        if routes is None:
            return deadletters.counts(self.db)
        found = {}
        for route in routes:
            row = self.db.conn.execute(
                "SELECT count(*) FROM dead_letters WHERE route = ?", (route,)
            ).fetchone()
            if row[0]:
                found[route] = int(row[0])
        return found

    def replay(self, ids: Iterable[int], now: float | None = None) -> int:
        from evroute.store import deadletters

        return deadletters.replay(self.db, ids, now)

    def purge(self, route: str | None = None, before: float | None = None) -> int:
        from evroute.store import deadletters

        return deadletters.purge(self.db, route, before)

    # ------------------------------------------------------------------ routes

    def routes(self, path: str) -> RoutesDoc | None:
        """The routes file itself; its revision is its modification time in nanoseconds."""
        from evroute.store.base import RoutesDoc

        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
                revision = os.fstat(f.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None
        return RoutesDoc(text, revision)

    def put_routes(self, path: str, text: str, revision: int | None) -> int:
        current = self.routes(path)
        if revision is not None and (current is None or current.revision != revision):
            raise InvalidInput(f"routes file '{path}' changed meanwhile; nothing written (try again)")
        folder = os.path.dirname(os.path.abspath(path))
        temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(temp, os.stat(path).st_mode & 0o7777)
        os.replace(temp, path)
        return os.stat(path).st_mtime_ns

    # ------------------------------------------------------------------ workers, housekeeping

    def workers(self, now: float) -> list[Presence]:
        from evroute.store import lease
        from evroute.store.base import Presence

        held = lease.current(self.db)
        if held is None:
            return []
        # The lease holder delivers every route: its figures are the routes' counters.
        found = self.cursors().values()
        counters = {"delivered": sum(c.delivered for c in found), "failed": sum(c.failed for c in found)}
        return [
            Presence(
                held.holder, held.pid, held.host, held.since, held.heartbeat, counters, alive=held.alive(now)
            )
        ]

    def collect(
        self,
        routes: Sequence[RouteStart],
        retention: float,
        now: float,
        limit: int | None,
        *,
        chunk: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        from evroute.store import sweep

        return sweep.collect_routes(self.db, routes, retention, now, limit, chunk, progress)

    @contextmanager
    def snapshot(self) -> Iterator[object]:
        with self.db.snapshot() as conn:
            yield conn

    def deliveries(self) -> SqliteDeliveries:
        return SqliteDeliveries(self)

    def use_routes(self, routes: Iterable[Any], settings: Any | None = None) -> None:
        """Nothing to tell a SQLite file: positions need no per-route configuration."""

    def set_durability(self, durability: str) -> None:
        self.db.set_durability(durability)

    # the routes cache (SQLite only: a parsed routes file keyed by the file's identity)
    def cached_routes(self, key: tuple[str, int, int, int]) -> str | None:
        return publishing.cached_routes(self.db, key)

    def remember_routes(self, key: tuple[str, int, int, int], config: str, now: float) -> None:
        publishing.remember_routes(self.db, key, config, now)

    def writable(self, wait_ms: int = 250) -> bool:
        return self.db.writable(wait_ms)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteDeliveries:
    """The worker's side on the same connection. Its methods do not yield to the loop: every
    call is one short SQLite statement or transaction, as before the seam. Once the worker
    holds the lease (:meth:`join`), every write is guarded by it."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.db = store.db
        self.holder: str | None = None
        # WAL checkpoints copy pages back into the database file and can take tens of
        # milliseconds: never on the worker's connection, inside the delivery loop.
        # housekeep() checkpoints from a thread instead (publishers keep SQLite's
        # automatic checkpoints too).
        self.db.manual_checkpoints()

    async def attach(self, routes: Sequence[RouteStart], now: float | None = None) -> dict[str, Cursor]:
        from evroute.store import cursors

        cursors.ensure(self.db, [(r.name, r.broker, r.start) for r in routes], now)
        found = cursors.all_cursors(self.db)
        return {r.name: found[r.name] for r in routes if r.name in found}

    async def read(self, route: str, broker: str, after: int, limit: int) -> Sequence[StoredEvent]:
        return log.read_after(self.db, broker, after, limit)

    async def succeeded(
        self,
        route: str,
        seq: int,
        token: Any,
        *,
        scheduled: bool,
        dlq_id: int | None,
        attempts: Sequence[Any] = (),
    ) -> None:
        if not scheduled and dlq_id is None:
            return  # the watermark covers it at the next commit: no row per delivered event
        from evroute.store import retries

        retries.forget(self.db, route, seq, dlq_id, self.holder, attempts=attempts)

    async def retry(self, retry: Retry, token: Any, attempts: Sequence[Any] = ()) -> None:
        from evroute.store import retries

        retries.schedule(self.db, [retry], self.holder, attempts=attempts)

    async def dead_letter(
        self, letter: NewDeadLetter, token: Any, replaced: int | None, attempts: Sequence[Any] = ()
    ) -> int:
        from evroute.store import deadletters

        # One transaction: the dead letter, its retry row (an event without a log seq is a
        # replay keyed by the dead letter's negative id) and the dead letter it replayed.
        key = letter.seq if letter.seq is not None else -(replaced or 0)
        return deadletters.bury(self.db, letter, key, replaced, self.holder, attempts=attempts)

    async def dls_outcome(self, dlq_id: int, outcome: str) -> None:
        from evroute.store import deadletters

        deadletters.set_dls_outcome(self.db, dlq_id, outcome)

    async def commit(self, progress: Sequence[Progress], now: float, recent: Sequence[Any] = ()) -> list[str]:
        from evroute.store import cursors

        return cursors.commit(self.db, progress, now=now, recent=recent, holder=self.holder)

    async def link(self, child: int, parent: int, kind: str, route: str) -> None:
        from evroute.store import links

        links.add(self.db, links.Link(child, parent, kind, route))

    async def epochs(self) -> dict[str, int]:
        from evroute.store import cursors

        return cursors.epochs(self.db)

    async def cursor(self, route: str) -> Cursor | None:
        return self.store.cursor(route)

    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[Retry]:
        from evroute.store import retries

        return retries.due(self.db, now, routes, limit)

    async def due_for(self, route: str, now: float, limit: int, upto: int | None = None) -> list[Retry]:
        from evroute.store import retries

        return retries.due_for_route(self.db, route, now, limit, replays_or_upto=upto)

    async def next_due(self, routes: Sequence[str], after: float | None = None) -> float | None:
        from evroute.store import retries

        return retries.next_due(self.db, routes, after)

    async def waiting(self, routes: Sequence[str]) -> int:
        from evroute.store import retries

        return retries.count(self.db, routes)

    async def retry_state(self, route: str, seq: int) -> Retry | None:
        return self.store.retry_state(route, seq)

    async def retry_event(self, retry: Retry) -> StoredEvent | None:
        from evroute.store import deadletters, retries

        if retry.dlq_id is not None:
            letter = deadletters.find(self.db, retry.dlq_id)
            if letter is not None:
                return StoredEvent(retry.seq, letter.broker, letter.dead_at, letter.event, retry.attempt + 1)
        stored = log.get(self.db, retry.seq) if retry.seq > 0 else None
        if stored is not None:
            return stored
        retries.remove(self.db, [(retry.route, retry.seq)])
        return None

    async def append(self, broker: str, events: Sequence[CloudEvent], now: float) -> AppendResult:
        return log.append(self.db, broker, events, now)

    async def append_each(
        self, requests: Sequence[tuple[str, Sequence[CloudEvent]]], now: float
    ) -> list[AppendResult | BaseException]:
        """One transaction for every request: a failure raises and stores none of them."""
        return list(log.append_each(self.db, requests, now))

    async def lag(self, broker: str, position: int) -> int:
        return log.count_after(self.db, broker, position)

    async def newest(self, broker: str) -> int:
        return log.max_seq(self.db, broker)

    async def join(self, holder: str, now: float) -> bool:
        from evroute.store import lease

        if lease.acquire(self.db, holder, now):
            self.holder = holder
            return True
        return False

    async def beat(self, holder: str, now: float, counters: Mapping[str, int]) -> bool:
        from evroute.store import lease

        return lease.renew(self.db, holder, now)

    async def leave(self, holder: str) -> None:
        from evroute.store import lease

        lease.release(self.db, holder)

    async def close(self) -> None:
        """The connection belongs to the store: ``store.close()`` closes it."""

    def version(self) -> int:
        return self.db.data_version()

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` whenever another process commits: the -wal file's notifications
        wake a ``PRAGMA data_version`` check."""
        from evroute.store.wakeups import watch_commits

        await watch_commits(self.db.path, self.db.data_version, changed)

    def problem(self) -> str | None:
        return None if self.db.writable() else f"database '{self.db.path}' is not writable"

    def configure(self, durability: str) -> None:
        self.db.set_durability(durability)

    async def housekeep(self) -> None:
        """A passive WAL checkpoint in a thread with its own connection: copying pages back
        into the database file can take tens of milliseconds, never inside the delivery loop."""
        import asyncio

        from evroute.store.db import checkpoint

        await asyncio.to_thread(checkpoint, self.db.path)


__all__ = ["SqliteDeliveries", "SqliteStore"]
