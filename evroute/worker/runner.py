"""The worker process: lease, start-up banner, signals, hot reload, ingress, housekeeping.

Signal handlers and the file watcher only set flags (asyncio events); the main loop
notices and acts, so nothing happens inside a handler.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from evroute import tracing
from evroute.errors import EvrouteError, LeaseHeld, RoutesInvalid, RuntimeFault
from evroute.routes.load import load_routes
from evroute.routes.model import RouteSet
from evroute.store import Store, lease
from evroute.store import log as event_log
from evroute.worker.engine import Engine

logger = logging.getLogger("evroute.worker")

HEARTBEAT = 2.0
STANDBY_POLL = 1.0
DEBOUNCE = 0.1
SUMMARY_EVERY = 60.0
GC_EVERY = 60.0


@dataclass(frozen=True)
class WorkerOptions:
    db: str
    routes: str
    once: bool = False
    drain: bool = False
    listen: str | None = None
    token: str | None = None


def run(options: WorkerOptions) -> int:
    """Run a worker until stopped; returns the exit status."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(Runner(options).main())


class Runner:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.signals = 0
        self.holder = lease.holder_id()
        self.engine: Engine | None = None
        self._routes_stamp: tuple[int, int] | None = None

    # ------------------------------------------------------------------ main

    async def main(self) -> int:
        opts = self.options
        address = None
        if opts.listen:
            from evroute.worker.ingress import parse_listen

            address = parse_listen(opts.listen)  # a bad --listen is refused before anything starts
        routeset = load_routes(opts.routes)  # an invalid file at start is an error: exit 2
        store = Store(opts.db, durability=routeset.settings.durability)
        self._install_signals()
        if not await self._take_lease(store):
            store.close()
            return 0
        tracing.setup(routeset.settings.tracing_endpoint)  # spans, when an OTLP endpoint is configured
        engine = Engine(store, routeset, once=opts.once)
        self.engine = engine
        runner = None
        observer = None
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
                await self._burst(engine, store, drain=opts.drain)
                return 0
            observer = self._watch()
            return await self._serve(engine, store)
        finally:
            await engine.stop()
            if runner is not None:
                await runner.cleanup()
            if observer is not None:
                observer.stop()
                observer.join(timeout=2)
            try:
                lease.release(store, self.holder)
            except EvrouteError:
                pass
            store.close()
            await asyncio.to_thread(tracing.shutdown)
            logger.info("worker stopped; cursors committed")

    async def _burst(self, engine: Engine, store: Store, drain: bool) -> None:
        waiter = asyncio.ensure_future(engine.run_until_idle(drain))
        stopper = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        lease.renew(store, self.holder)

    async def _serve(self, engine: Engine, store: Store) -> int:
        last_beat = last_summary = last_gc = time.monotonic()
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                reloader = asyncio.ensure_future(self.reload.wait())
                await asyncio.wait(
                    [stopper, reloader], timeout=HEARTBEAT / 2, return_when=asyncio.FIRST_COMPLETED
                )
                reloader.cancel()
                if self.reload.is_set():
                    await self._reload(engine)
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    if not lease.renew(store, self.holder):
                        logger.error("lost the worker lease to another worker; stopping")
                        return 1
                if now - last_summary >= SUMMARY_EVERY:
                    last_summary = now
                    self._summary(engine)
                if now - last_gc >= GC_EVERY and engine.settings.retention:
                    last_gc = now
                    await self._collect(engine)
        finally:
            stopper.cancel()
        return 0

    # ------------------------------------------------------------------ lease

    async def _take_lease(self, store: Store) -> bool:
        if lease.acquire(store, self.holder):
            return True
        holder = lease.current(store)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.since)) if holder else "?"
        who = f"pid {holder.pid} on {holder.host}" if holder else "another worker"
        if self.options.once or self.options.drain:
            raise LeaseHeld(
                f"another worker ({who}, since {since}) is delivering from {store.path}; stop it first"
            )
        logger.info("standing by: another worker (%s) holds the lease since %s", who, since)
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), STANDBY_POLL)
            except TimeoutError:
                pass
            if not self.stop.is_set() and lease.acquire(store, self.holder):
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
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        target = os.path.abspath(self.options.routes)
        loop = asyncio.get_running_loop()
        flag = self.reload

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
        return observer

    async def _reload(self, engine: Engine) -> None:
        # Debounce: editors write in several steps; wait until the file is quiet.
        while True:
            self.reload.clear()
            await asyncio.sleep(DEBOUNCE)
            if not self.reload.is_set():
                break
        try:
            routeset = load_routes(self.options.routes)
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
        engine.apply(routeset)
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
            store=engine.store,
            max_event_bytes=engine.settings.max_event_bytes,
            token=token,
            metrics=engine.metrics,
            on_stored=engine.notify,
            mount=lambda a: add_console(a, db=self.options.db, routes=self.options.routes, gate=gate),
        )
        runner = await start(app, host, port)
        logger.info("ingress listening on http://%s:%d/%s", host, port, " (token required)" if token else "")
        logger.info("console on %s", sign_in_url(host, port, gate))
        return runner

    def _banner(self, store: Store, routeset: RouteSet) -> None:
        logger.info(
            "evroute worker pid %d: database %s (durability %s), routes %s",
            os.getpid(),
            os.path.abspath(store.path),
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

    def _summary(self, engine: Engine) -> None:
        for d in engine.dispatchers.values():
            lag = event_log.count_after(engine.store, d.route.broker, d.committed)
            logger.info(
                "route %s: cursor %d, lag %d, in flight %d, breaker %s",
                d.route.name,
                d.committed,
                lag,
                d.in_flight,
                d.breaker.state,
            )

    async def _collect(self, engine: Engine) -> None:
        """Retention in a thread with its own connection: deleting in chunks never stalls
        deliveries for longer than one chunk's write lock."""
        from evroute.retention import collect

        routeset = engine.routeset

        def work() -> int:
            with Store(self.options.db) as store:
                return collect(store, routeset, time.time())

        try:
            deleted = await asyncio.to_thread(work)
            if deleted:
                logger.info("retention: deleted %d events every route has passed", deleted)
        except EvrouteError as exc:
            logger.warning("retention pass failed: %s", exc)


__all__ = ["RuntimeFault", "WorkerOptions", "run"]
