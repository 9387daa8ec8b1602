"""The retry scheduler: delivers what the durable retry schedule says is due.

It takes rows of unordered routes and dead-letter replays of any route; an ordered route's
head event is retried in place by its own dispatcher (head-of-line). Each route's
deliveries share the route's concurrency limit; a route whose limit is reached is skipped
for this round, so one slow route never holds back another's retries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from evroute.cloudevent import CloudEvent
from evroute.store.base import Retry

if TYPE_CHECKING:
    from evroute.worker.dispatcher import Dispatcher
    from evroute.worker.engine import Engine

logger = logging.getLogger("evroute.worker")
MAX_WAIT = 1.0


class Retrier:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.wake = asyncio.Event()
        self.running: set[tuple[str, int]] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retrier")

    def notify(self) -> None:
        self.wake.set()

    @property
    def busy(self) -> bool:
        return bool(self.running)

    async def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def _owner(self, row: Retry) -> Dispatcher | None:
        d = self.engine.dispatchers.get(row.route)
        if d is None or d.route.paused:
            return None
        if d.route.delivery.ordered and row.dlq_id is None and row.seq > d.mark.position:
            return None  # the ordered dispatcher retries its head event itself
        return d

    async def step(self, now: float) -> float:
        """Start every due retry that may start now; return seconds until the next look."""
        engine = self.engine
        names = list(engine.dispatchers)
        due = await engine.deliveries.due(now, names, limit=512)
        started = 0
        for row in due:
            key = (row.route, row.seq)
            if key in self.running:
                continue
            d = self._owner(row)
            if d is None or d.sem.locked() or not d.breaker.allow(now):
                continue
            event = await self._event(row)
            if event is None:
                continue
            self.running.add(key)
            started += 1
            task = asyncio.get_running_loop().create_task(self._deliver(d, row, event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        following = await engine.deliveries.next_due(names)
        if following is None:
            return MAX_WAIT
        wait = min(MAX_WAIT, max(0.0, following - now))
        # Due rows that could not start (route at its limit, breaker open, already running):
        # look again shortly; a finishing delivery wakes us sooner.
        return wait if wait > 0 or started else 0.02

    async def _event(self, row: Retry) -> CloudEvent | None:
        stored = await self.engine.deliveries.retry_event(row)
        if stored is not None:
            return stored.event
        logger.warning("route %s: event seq %d is no longer stored; its retry is dropped", row.route, row.seq)
        return None

    async def _deliver(self, d: Dispatcher, row: Retry, event: CloudEvent) -> None:
        await d.sem.acquire()
        sem = d.sem
        d.retrying += 1
        try:
            await self.engine.settle(
                d,
                event,
                row.seq,
                attempt=row.attempt + 1,
                first_failed_at=row.first_failed_at,
                dlq_id=row.dlq_id,
                scheduled=True,
            )
        except Exception:
            logger.exception(
                "route %s: retry of seq %d failed unexpectedly; it stays scheduled", row.route, row.seq
            )
        finally:
            d.retrying -= 1
            sem.release()
            self.running.discard((row.route, row.seq))
            self.engine.dirty = True
            self.wake.set()

    async def _run(self) -> None:
        while not self.stopped:
            try:
                wait = await self.step(self.engine.clock())
            except Exception:
                logger.exception("retry scheduler fault; trying again in 1s")
                wait = 1.0
            self.wake.clear()
            if self.stopped:
                return
            try:
                await asyncio.wait_for(self.wake.wait(), wait if wait > 0 else 0.001)
            except TimeoutError:
                pass
