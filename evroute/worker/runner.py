"""The worker process: lease, start-up banner, signals, hot reload, ingress, housekeeping.

Signal handlers and the file watcher only set flags (asyncio events); the main loop
notices and acts, so nothing happens inside a handler. The lease is renewed by a supervised
heartbeat from the moment it is taken, in every mode (`--once` and `--drain` too), and every
cursor, retry and dead-letter write is guarded by it: a worker that lost the lease stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evroute import tracing
from evroute.errors import EvrouteError, LeaseHeld, RoutesInvalid, RuntimeFault
from evroute.routes.load import load_routes, load_routes_text
from evroute.routes.model import RouteSet
from evroute.store import lease
from evroute.store.base import EventStore
from evroute.store.opener import Credentials, StoreURL, open_store
from evroute.worker.engine import Engine
from evroute.worker.supervise import Supervisor

logger = logging.getLogger("evroute.worker")

HEARTBEAT = 2.0
STANDBY_POLL = 1.0
DEBOUNCE = 0.1
SUMMARY_EVERY = 60.0
GC_EVERY = 60.0
RELOAD_RETRY = 1.0


@dataclass(frozen=True)
class WorkerOptions:
    store: StoreURL
    routes: str
    once: bool = False
    drain: bool = False
    listen: str | None = None
    token: str | None = None
    credentials: Credentials | None = None


def run(options: WorkerOptions) -> int:
    """Run a worker until stopped; returns the exit status."""
    from evroute import eventloop

    return eventloop.run(Runner(options).main())


class Runner:
    def __init__(
        self,
        options: WorkerOptions,
        *,
        clock: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.options = options
        self.clock = clock
        self.heartbeat = heartbeat
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.lost = asyncio.Event()
        self.signals = 0
        self.holder = lease.holder_id()
        self.engine: Engine | None = None
        self.supervisor = Supervisor()
        self._routes_stamp: tuple[int, int] | None = None

    # ------------------------------------------------------------------ main

    async def main(self) -> int:
        opts = self.options
        address = None
        if opts.listen:
            from evroute.worker.ingress import parse_listen

            address = parse_listen(opts.listen)  # a bad --listen is refused before anything starts
        if opts.store.kind == "sqlite":
            routeset = load_routes(opts.routes)  # an invalid file at start is an error: exit 2
            store = open_store(opts.store, durability=routeset.settings.durability)
        else:  # the routes live in the store: one source of truth for every worker
            store = open_store(opts.store, credentials=opts.credentials)
            routeset = self._stored_routes(store)
        self._install_signals()
        engine = Engine(
            store,
            routeset,
            once=opts.once,
            clock=self.clock,
            sources=not (opts.once or opts.drain),  # PingSources tick in a serving worker only
        )
        if not await self._take_lease(engine, store):
            await engine.deliveries.close()
            store.close()
            return 0
        tracing.setup(routeset.settings.tracing_endpoint)  # spans, when an OTLP endpoint is configured
        self.supervisor.spawn("heartbeat", lambda: self._beat(engine))
        self.engine = engine
        runner = None
        observer = None
        watcher: asyncio.Future[None] | None = None
        try:
            await engine.start()
            # Everything loaded so far lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise stall deliveries now and then.
            gc.collect()
            gc.freeze()
            self._banner(store, routeset)
            if address is not None:
                runner = await self._listen(engine, *address)
            if opts.once or opts.drain:
                await self._burst(engine, drain=opts.drain)
                return 1 if self._lease_gone(engine) else 0
            if opts.store.kind == "sqlite":
                observer = self._watch()
            else:  # a cluster's routes: every worker follows the revisions in the store
                watch_routes = getattr(engine.deliveries, "watch_routes", None)
                if watch_routes is not None:
                    watcher = asyncio.ensure_future(watch_routes(self.reload.set))
            return await self._serve(engine)
        finally:
            if watcher is not None:
                watcher.cancel()
            await engine.stop()
            await self.supervisor.stop()
            if runner is not None:
                await runner.cleanup()
            if observer is not None:
                observer.stop()
            if not self._lease_gone(engine):
                try:
                    await engine.deliveries.leave(self.holder)
                except EvrouteError:
                    pass
            await engine.deliveries.close()
            store.close()
            await asyncio.to_thread(tracing.shutdown)
            logger.info("worker stopped; cursors committed")

    async def _burst(self, engine: Engine, drain: bool) -> None:
        waiter = asyncio.ensure_future(engine.run_until_idle(drain))
        stopper = asyncio.ensure_future(self.stop.wait())
        loser = asyncio.ensure_future(self.lost.wait())
        await asyncio.wait([waiter, stopper, loser], return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper, loser):
            task.cancel()

    def _lease_gone(self, engine: Engine) -> bool:
        return self.lost.is_set() or engine.lease_lost.is_set()

    def _stored_routes(self, store: EventStore) -> RouteSet:
        doc = store.routes(self.options.routes)
        if doc is None:
            return RouteSet()
        return load_routes_text(doc.text, self.options.routes)

    def _counters(self, engine: Engine) -> dict[str, int]:
        """What a heartbeat carries (a JetStream store sums these over its workers)."""
        return {
            "routes": len(engine.runtimes),
            "in_flight": sum(rt.in_flight for rt in engine.runtimes.values()),
        }

    async def _beat(self, engine: Engine) -> None:
        """Renew the lease (a heartbeat) every ``heartbeat`` seconds from the moment it is taken."""
        while True:
            await asyncio.sleep(self.heartbeat)
            if not await engine.deliveries.beat(self.holder, self.clock(), self._counters(engine)):
                logger.error("lost the worker lease to another worker; stopping")
                self.lost.set()
                if self.engine is not None:
                    self.engine.lose_lease()
                return

    async def _serve(self, engine: Engine) -> int:
        last_summary = last_gc = time.monotonic()
        stopper = asyncio.ensure_future(self.stop.wait())
        loser = asyncio.ensure_future(engine.lease_lost.wait())
        try:
            while not self.stop.is_set():
                reloader = asyncio.ensure_future(self.reload.wait())
                await asyncio.wait(
                    [stopper, reloader, loser], timeout=HEARTBEAT / 2, return_when=asyncio.FIRST_COMPLETED
                )
                reloader.cancel()
                if self._lease_gone(engine):
                    return 1
                if self.reload.is_set():
                    await self._reload(engine)
                now = time.monotonic()
                if now - last_summary >= SUMMARY_EVERY:
                    last_summary = now
                    try:
                        await self._summary(engine)
                    except Exception as exc:  # a summary is worth no fault of the worker
                        logger.warning("no route summary this time: %s", exc)
                if now - last_gc >= GC_EVERY and engine.settings.retention:
                    last_gc = now
                    await self._collect(engine)
        finally:
            stopper.cancel()
            loser.cancel()
        return 0

    # ------------------------------------------------------------------ lease

    async def _take_lease(self, engine: Engine, store: EventStore) -> bool:
        """Join the store's workers; an exclusive store (SQLite's lease) may make us stand by."""
        deliveries = engine.deliveries
        if await deliveries.join(self.holder, self.clock()):
            return True
        live = [w for w in store.workers(self.clock()) if w.alive]
        holder = live[0] if live else None
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.since)) if holder else "?"
        who = f"pid {holder.pid} on {holder.host}" if holder else "another worker"
        if self.options.once or self.options.drain:
            raise LeaseHeld(
                f"another worker ({who}, since {since}) is delivering from {_where(store)}; stop it first"
            )
        logger.info("standing by: another worker (%s) holds the lease since %s", who, since)
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), STANDBY_POLL)
            except TimeoutError:
                pass
            if not self.stop.is_set() and await deliveries.join(self.holder, self.clock()):
                logger.info("took over the lease; delivering")
                return True
        return False

    # ------------------------------------------------------------------ signals and reload

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, self.reload.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (embedded use): stop() and reload are driven by the caller

    def _on_stop_signal(self) -> None:
        self.signals += 1
        if self.signals > 1:
            # Second signal: exit at once. Safe: delivery is at-least-once and cursors only lag.
            os._exit(1)
        logger.info("stopping: finishing in-flight deliveries (signal again to exit at once)")
        self.stop.set()

    def _watch(self) -> Any:
        """Notice edits of the routes file: inotify read on the loop (no thread woken by the
        database's writes in the same folder), else watchdog's observer. Returns a thing to
        ``stop()``."""
        from evroute import dirwatch

        target = os.path.abspath(self.options.routes)
        flag = self.reload
        inotify = dirwatch.watch(os.path.dirname(target), [os.path.basename(target)], flag.set)
        if inotify is not None:
            return _Stop(inotify.close)
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {os.path.abspath(str(event.src_path))}
                dest = getattr(event, "dest_path", "")
                if dest:
                    paths.add(os.path.abspath(str(dest)))
                if target in paths:
                    loop.call_soon_threadsafe(flag.set)

        observer = Observer()
        observer.schedule(Handler(), os.path.dirname(target) or ".", recursive=False)
        observer.daemon = True
        observer.start()

        def stop() -> None:
            observer.stop()
            observer.join(timeout=2)

        return _Stop(stop)

    async def _reload(self, engine: Engine) -> None:
        # Debounce: editors write in several steps; wait until the file is quiet.
        while True:
            self.reload.clear()
            await asyncio.sleep(DEBOUNCE)
            if not self.reload.is_set():
                break
        try:
            if engine.store.kind == "sqlite":
                routeset = load_routes(self.options.routes)
            else:  # a network round trip: off the delivery loop
                routeset = await asyncio.to_thread(self._stored_routes, engine.store)
        except RoutesInvalid as exc:
            logger.error("routes file rejected; keeping the last good routes:")
            for problem in exc.problems:
                logger.error("  %s", problem)
            return
        except EvrouteError as exc:
            logger.error("routes file rejected; keeping the last good routes: %s", exc)
            return
        if routeset == engine.routeset:
            return
        try:
            await engine.apply(routeset)
        except EvrouteError as exc:
            # The database refused (locked, full disk): keep the routes running now and try
            # the reload again shortly.
            logger.error("routes file not applied (trying again in %.0fs): %s", RELOAD_RETRY, exc)
            asyncio.get_running_loop().call_later(RELOAD_RETRY, self.reload.set)
            return
        logger.info(
            "routes reloaded: %d route%s", len(routeset.routes), "" if len(routeset.routes) == 1 else "s"
        )

    # ------------------------------------------------------------------ ingress and housekeeping

    async def _listen(self, engine: Engine, host: str, port: int) -> Any:
        from evroute.worker.ingress import make_app, start

        token = self.options.token or os.environ.get("EVROUTE_TOKEN") or None
        from evroute.console.app import add_console
        from evroute.console.auth import Gate
        from evroute.console.server import sign_in_url

        gate = Gate(token)
        app = make_app(
            store=engine.deliveries,
            max_event_bytes=engine.settings.max_event_bytes,
            token=token,
            metrics=engine.metrics,
            on_stored=engine.notify,
            mount=lambda a: add_console(
                a,
                db=_console_store(self.options.store),
                routes=self.options.routes,
                gate=gate,
                credentials=self.options.credentials,
            ),
        )
        runner = await start(app, host, port)
        logger.info("ingress listening on http://%s:%d/%s", host, port, " (token required)" if token else "")
        logger.info("console on %s", sign_in_url(host, port, gate))
        return runner

    def _banner(self, store: EventStore, routeset: RouteSet) -> None:
        logger.info(
            "evroute worker pid %d: %s %s (durability %s), routes %s",
            os.getpid(),
            "database" if store.kind == "sqlite" else "store",
            _where(store),
            routeset.settings.durability,
            os.path.abspath(self.options.routes),
        )
        if not routeset.routes:
            logger.info(
                "no routes loaded yet; add one with `evroute subscribe add` (picked up while running)"
            )
        for r in routeset.routes:
            logger.info(
                "  route %s: broker %s -> %s%s",
                r.name,
                r.broker,
                r.mask(r.subscriber.describe()),
                " (paused)" if r.paused else "",
            )

    async def _summary(self, engine: Engine) -> None:
        lags = await engine.refresh_lag()
        now = engine.clock()
        for name, rt in engine.runtimes.items():
            logger.info(
                "route %s: cursor %d, lag %d, in flight %d, breaker %s",
                name,
                rt.committed,
                lags.get(name, 0),
                rt.in_flight,
                rt.breaker.state_at(now),
            )
        degraded = engine.supervisor.degraded() + self.supervisor.degraded()
        if degraded:
            logger.warning("recovering from recent faults: %s", ", ".join(degraded))

    async def _collect(self, engine: Engine) -> None:
        """Retention in a thread with its own connection: deleting in chunks never stalls
        deliveries for longer than one chunk's write lock."""
        from evroute.retention import collect

        routeset = engine.routeset

        def work() -> int:
            store = open_store(self.options.store, credentials=self.options.credentials)
            try:
                return collect(store, routeset, time.time())
            finally:
                store.close()

        try:
            deleted = await asyncio.to_thread(work)
            if deleted:
                logger.info("retention: deleted %d events every route has passed", deleted)
        except EvrouteError as exc:
            logger.warning("retention pass failed: %s", exc)


class _Stop:
    """What the routes-file watch gives back: ``stop()`` ends it."""

    def __init__(self, stop: Callable[[], object]) -> None:
        self.stop = stop


def _where(store: EventStore) -> str:
    path = getattr(store, "path", None)
    return os.path.abspath(path) if store.kind == "sqlite" and path else store.url


def _console_store(url: Any) -> Any:
    """What the console reads: the SQLite file, or the store URL (NATS, through the seam)."""
    return url.path if url.kind == "sqlite" else url


__all__ = ["RuntimeFault", "WorkerOptions", "run"]
