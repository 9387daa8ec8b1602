"""The delivery engine: wires every route's runtime and dispatcher, the retry scheduler and
the settler to the store seam's worker side (``store.deliveries()``), and supervises the background loops (dispatchers,
retries, batched cursor commits, wake-ups, checkpoints, lag). Nothing imports it but the
runner (and tests and benchmarks, which drive it directly).

A loop that fails is logged once, backed off and restarted (:mod:`evroute.worker.supervise`);
a write refused because another worker took the lease stops deliveries (``lease_lost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from evroute.cloudevent import CloudEvent, check_size
from evroute.delivery import new_session
from evroute.delivery.outcome import Outcome
from evroute.errors import LeaseLost, StoreError
from evroute.routes.model import Route, RouteSet, Settings
from evroute.store import Store
from evroute.store.base import Deliveries, EventStore, starts
from evroute.worker import history
from evroute.worker.attempt import forward
from evroute.worker.dispatcher import Dispatcher
from evroute.worker.metrics import Metrics
from evroute.worker.retrier import Retrier
from evroute.worker.runtime import RouteRuntime
from evroute.worker.settle import Settler
from evroute.worker.supervise import Supervisor

logger = logging.getLogger("evroute.worker")

COMMIT_INTERVAL = 0.1  # cursor commits are batched: at most ten a second, never one per event
EPOCH_CHECK_INTERVAL = 0.1
LAG_INTERVAL = 5.0
CHECKPOINT_INTERVAL = 1.0


class Engine:
    def __init__(
        self,
        store: EventStore | Store,
        routeset: RouteSet,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        once: bool = False,
        holder: str | None = None,
        sources: bool = True,
    ) -> None:
        if isinstance(store, Store):  # a SQLite connection itself: the SQLite store over it
            from evroute.store.sqlite import SqliteStore

            store = SqliteStore.over(store)
        self.store: EventStore = store
        # The worker's side of the store: once it holds the store's presence (the SQLite
        # lease), every cursor, retry and dead-letter write is guarded by it.
        self.deliveries: Deliveries = store.deliveries()
        self.holder = holder  # a presence already held (the runner joins through self.deliveries)
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.once = once
        self.routeset = routeset
        self.settings: Settings = routeset.settings
        self.runtimes: dict[str, RouteRuntime] = {}
        self.dispatchers: dict[str, Dispatcher] = {}
        self.retiring: list[Dispatcher] = []
        self.session: Any = None
        self.stopping = False
        self.lease_lost = asyncio.Event()
        self.side_tasks: set[asyncio.Task[None]] = set()  # dead-letter-sink forwards, retirements
        self.supervisor = Supervisor()
        self.recent = history.Recent()  # outcomes for `evroute tail`, written with the cursor commit
        self.run_sources = sources and not once  # PingSources tick in a serving worker only
        self.pings: Any = None  # the PingSource loop, made when a routes file has sources
        self.settler = Settler(
            self.deliveries,
            self.metrics,
            clock,
            max_event_bytes=lambda: self.settings.max_event_bytes,
            on_reply=self.notify,
            on_retry=self._retry_scheduled,
            on_dead_letter=self._dead_lettered,
            on_lease_lost=self.lose_lease,
            recent=self.recent,
        )
        self.retrier = Retrier(
            lambda: self.runtimes,
            store=self.deliveries,
            settler=self.settler,
            clock=clock,
            session=self._session,
        )

    def _session(self) -> Any:
        return self.session

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.session = new_session()
        if self.holder is not None and not await self.deliveries.join(self.holder, self.clock()):
            self.lose_lease()
        await self._apply_routes(self.routeset)
        sup = self.supervisor
        sup.spawn("retries", self.retrier.run)
        sup.spawn("commits", self._commit_loop)
        sup.spawn("wakeups", self._wakeup_loop)
        sup.spawn("checkpoints", self._checkpoint_loop)
        sup.spawn("lag", self._lag_loop)
        self._sources(self.routeset)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking events, let in-flight deliveries finish (up to ``grace``), commit."""
        self.stopping = True
        if self.pings is not None:
            self.pings.stop()
        everyone = [*self.dispatchers.values(), *self.retiring]
        waits = [d.stop() for d in everyone] + [self.retrier.stop()]
        limit = (
            grace
            if grace is not None
            else max((d.rt.route.delivery.timeout for d in everyone), default=30.0) + 1
        )
        try:
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), limit)
        except TimeoutError:
            logger.warning(
                "in-flight deliveries did not finish within %.0fs; they will be redelivered", limit
            )
            for d in everyone:
                d.cancel()
            self.retrier.cancel()
        if self.side_tasks:
            await asyncio.wait(list(self.side_tasks), timeout=5.0)
        await self.supervisor.stop()
        try:
            await self.commit()
        except StoreError as exc:
            logger.warning("cursors not committed at stop (events after them are delivered again): %s", exc)
        if self.session is not None:
            await self.session.close()

    def notify(self, broker: str | None = None) -> None:
        """New events in ``broker`` (its routes' dispatchers are woken; a new event makes no
        retry due, so the retrier is left alone), or, without one, anything may have changed."""
        for d in self.dispatchers.values():
            if broker is None or d.rt.route.broker == broker:
                d.notify()
        if broker is None:
            self.retrier.notify()

    def _retry_scheduled(self) -> None:
        self.retrier.notify()

    def lose_lease(self) -> None:
        """Another worker holds the lease now: stop taking events at once."""
        if self.lease_lost.is_set():
            return
        logger.error("another worker holds the lease now; this worker stops delivering")
        self.lease_lost.set()
        for d in self.dispatchers.values():
            d.stopped = True
            d.notify()
        self.retrier.stopped = True
        self.retrier.notify()

    # ------------------------------------------------------------------ routes

    async def apply(self, routeset: RouteSet) -> None:
        """Swap in a new, valid routes file (hot reload). Raises StoreError and changes
        nothing if the new routes' cursors cannot be created."""
        await self._apply_routes(routeset)

    async def _apply_routes(self, routeset: RouteSet) -> None:
        wanted = routeset.by_name()
        self.store.use_routes(routeset.routes, routeset.settings)
        found = await self.deliveries.attach(starts(wanted.values()), now=self.clock())
        for name in list(self.dispatchers):
            route = wanted.get(name)
            current = self.dispatchers[name]
            if route is None or route.broker != current.rt.route.broker:
                # Removed (or moved to another broker): stop taking events, keep the cursor.
                self.dispatchers.pop(name)
                self.runtimes.pop(name, None)
                self._retire(current)
                if route is None:
                    logger.info("route %s removed; its cursor is kept", name)
            elif route != current.rt.route:
                current.rt.update(route)
                logger.info("route %s changed; applies to events not yet dispatched", name)
        for name, route in wanted.items():
            if name in self.dispatchers:
                continue
            cursor = found[name]
            rt = RouteRuntime(route, cursor)
            dispatcher = Dispatcher(
                rt,
                store=self.deliveries,
                settler=self.settler,
                clock=self.clock,
                session=self._session,
                once=self.once,
            )
            self.retrier.watch(rt)
            self.runtimes[name] = rt
            self.dispatchers[name] = dispatcher
            self.supervisor.spawn(f"route {name}", dispatcher.run)
            if self.routeset is not routeset:
                logger.info("route %s added at seq %d", name, cursor.position)
        if self.routeset is not routeset:
            self._sources(routeset)
        self.routeset = routeset
        self.settings = routeset.settings
        self.deliveries.configure(self.settings.durability)
        self.retrier.notify()

    def _retire(self, dispatcher: Dispatcher) -> None:
        self.retiring.append(dispatcher)

        async def finish() -> None:
            await dispatcher.stop()  # its loop ends too
            try:
                await self.commit()
            except StoreError as exc:
                logger.warning("route %s: cursor not committed: %s", dispatcher.route_name, exc)
            if dispatcher in self.retiring:
                self.retiring.remove(dispatcher)

        self._side(finish())

    def _side(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    def _dead_lettered(self, route: Route, dlq_id: int, event: CloudEvent, outcome: Outcome) -> None:
        self._side(
            forward(self.deliveries, route, dlq_id, event, outcome, self.session, lambda: self.stopping)
        )

    # ------------------------------------------------------------------ background loops

    def _sources(self, routeset: RouteSet) -> None:
        """Start, change or stop ticking the routes file's PingSources (only a serving worker)."""
        if not self.run_sources or (self.pings is None and not routeset.sources):
            return
        if self.pings is None:
            from evroute.sources.ping import PingLoop  # croniter: only for a file with sources

            self.pings = PingLoop(routeset.sources, self.clock, self._publish_ticks)
            self.supervisor.spawn("pingsources", self.pings.run)
        else:
            self.pings.configure(routeset.sources)

    async def _publish_ticks(self, broker: str, events: Sequence[CloudEvent]) -> None:
        """A PingSource tick into its broker: stored (a tick already stored is a duplicate and
        stores nothing), then that broker's routes are woken."""
        for event in events:
            check_size(event, self.settings.max_event_bytes)
        result = await self.deliveries.append(broker, events, self.clock())
        if result.stored:
            self.metrics.published(broker)
            self.notify(broker)

    def report_pace(self, now: float) -> None:
        """Tell `status` which routes are throttled and how a consumer group's endpoints fare
        (written only when that changed)."""
        reports = [r for rt in self.runtimes.values() if (r := rt.flow.report(now)) is not None]
        if not reports:
            return
        try:
            self.store.put_pace(reports)
        except StoreError as exc:
            for rt in self.runtimes.values():
                rt.flow.unreport()
            logger.debug("route pace not written (next commit tries again): %s", exc)

    async def commit(self) -> None:
        """Commit every route's cursor and counters now (one transaction). Raises StoreError."""
        everyone = [d.rt for d in self.dispatchers.values()] + [d.rt for d in self.retiring]
        now = self.clock()
        self.report_pace(now)
        pending = [(rt, p) for rt in everyone if (p := rt.progress(now)) is not None]
        recent = self.recent.take()
        if not pending and not recent:
            return
        try:
            moved = await self.deliveries.commit([p for _, p in pending], now, recent)
        except LeaseLost:
            self.recent.put_back(recent)
            self.lose_lease()
            raise
        except BaseException:
            self.recent.put_back(recent)
            raise
        for rt, p in pending:
            if p.route in moved:
                cursor = await self.deliveries.cursor(p.route)
                if cursor is not None:
                    logger.info(
                        "route %s: cursor moved to %d; continuing from there", p.route, cursor.position
                    )
                    rt.reset(cursor)
            else:
                rt.committed_progress(p)

    async def _commit_loop(self) -> None:
        while not self.lease_lost.is_set():
            await asyncio.sleep(COMMIT_INTERVAL)
            try:
                await self.commit()
            except LeaseLost:
                return
            for rt in self.runtimes.values():
                self.metrics.set_in_flight(rt.route.name, rt.route.broker, rt.in_flight)

    async def refresh_lag(self) -> dict[str, int]:
        """Each route's lag (events of its broker after its committed cursor), as metrics.

        The broker's newest seq minus the cursor: one index seek per route however long the
        backlog (seqs are shared by all brokers, so with several brokers interleaved this is
        an upper bound)."""
        lags = {}
        newest: dict[str, int] = {}
        for rt in self.runtimes.values():
            broker = rt.route.broker
            if broker not in newest:
                newest[broker] = await self.deliveries.newest(broker)
            lag = max(0, newest[broker] - rt.committed)
            lags[rt.route.name] = lag
            self.metrics.set_lag(rt.route.name, broker, lag)
        return lags

    async def _lag_loop(self) -> None:
        while True:
            await self.refresh_lag()
            await asyncio.sleep(LAG_INTERVAL)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await self.deliveries.housekeep()  # SQLite: a WAL checkpoint in a thread
            except StoreError as exc:
                logger.debug("%s", exc)

    async def _wakeup_loop(self) -> None:
        last_epochs = 0.0
        checks: set[asyncio.Task[None]] = set()

        def changed() -> None:
            nonlocal last_epochs
            for d in self.dispatchers.values():
                d.notify()
            # Cursor moves (`subscribe reset`) and new retry rows (`dlq replay`) from other
            # processes are rare: look for them at most every 100 ms, not on every publish.
            now = time.monotonic()
            if now - last_epochs >= EPOCH_CHECK_INTERVAL:
                last_epochs = now
                task = asyncio.get_running_loop().create_task(self._check_epochs())
                checks.add(task)
                task.add_done_callback(checks.discard)
                self.retrier.notify()

        await self.deliveries.watch(changed)

    async def _check_epochs(self) -> None:
        for name, epoch in (await self.deliveries.epochs()).items():
            rt = self.runtimes.get(name)
            if rt is not None and epoch != rt.epoch:
                cursor = await self.deliveries.cursor(name)
                if cursor is not None:
                    logger.info("route %s: cursor moved to %d; continuing from there", name, cursor.position)
                    rt.reset(cursor)

    # ------------------------------------------------------------------ --once / --drain

    async def idle(self, drain: bool) -> bool:
        """Nothing left to do now (``--once``), or at all (``--drain``)."""
        if self.lease_lost.is_set():
            return True
        for d in self.dispatchers.values():
            if not (d.idle if drain else d.done_for_now()):
                return False
        if self.retiring or self.side_tasks or self.retrier.busy:
            return False
        if drain:
            names = [n for n, rt in self.runtimes.items() if not rt.route.paused]
            return await self.deliveries.waiting(names) == 0
        # --once: only retries that could start now keep it going (not a paused route's, not
        # those a breaker holds, not an ordered head parked until its due time).
        now = self.clock()
        for rt in self.runtimes.values():
            if not rt.startable(now):
                continue
            head = rt.mark.position if rt.route.delivery.ordered else None
            if await self.deliveries.due_for(rt.route.name, now, 1, upto=head):
                return False
        return True

    async def run_until_idle(self, drain: bool) -> None:
        quiet = 0
        loop = asyncio.get_running_loop()
        next_look = 0.0
        while True:
            await asyncio.sleep(0.01)
            if not quiet and loop.time() < next_look:
                continue  # busy at the last look: commit and look again at the batching interval
            next_look = loop.time() + COMMIT_INTERVAL
            try:
                await self.commit()
            except StoreError as exc:
                logger.debug("commit deferred: %s", exc)
            # Three quiet looks in a row: a reply or a retry scheduled in between is not missed.
            quiet = quiet + 1 if await self.idle(drain) else 0
            if quiet >= 3:
                return
