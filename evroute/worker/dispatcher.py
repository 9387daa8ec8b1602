"""One route's dispatcher: read the broker after the cursor, filter, deliver, settle.

Unordered routes keep up to ``concurrency`` deliveries in flight; a failed event moves to
the durable retry schedule (the retrier takes it from there) so it never holds the others
back. Ordered routes deliver one event at a time in seq order and keep a failing event at
the head (its retries are waited out here) until it is delivered or dead-lettered, as
Knative's Kafka broker does in ordered mode.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from evroute.routes.model import Route
from evroute.store import log as event_log
from evroute.store import retries
from evroute.store.cursors import Cursor, Progress
from evroute.store.log import StoredEvent
from evroute.worker.tracker import Breaker, Watermark

if TYPE_CHECKING:
    from evroute.worker.engine import Engine

logger = logging.getLogger("evroute.worker")
BATCH = 256


class Dispatcher:
    def __init__(self, engine: Engine, route: Route, cursor: Cursor) -> None:
        self.engine = engine
        self.route = route
        self.epoch = cursor.epoch
        self.mark = Watermark(cursor.position)
        self.committed = cursor.position
        self.generation = 0  # bumped when the cursor is moved under us: stale work is dropped
        self.breaker = Breaker(route.delivery.circuit_breaker)
        self.sem = asyncio.Semaphore(max(1, route.delivery.concurrency))
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.retrying = 0  # deliveries of due retries in flight (run by the retrier)
        self.stopped = False
        self.idle = False  # caught up: nothing left to read and nothing in flight
        self.parked = False  # --once: an ordered head waits for a retry that is not due yet
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"route:{self.route.name}")

    def notify(self) -> None:
        self.wake.set()

    def update(self, route: Route) -> None:
        """Apply a changed route (hot reload) to events not yet dispatched."""
        old = self.route
        self.route = route
        if route.delivery.circuit_breaker != old.delivery.circuit_breaker:
            self.breaker.configure(route.delivery.circuit_breaker)
        # A new Semaphore takes effect for new work; in-flight tasks release the old one.
        if route.delivery.concurrency != old.delivery.concurrency:
            self.sem = asyncio.Semaphore(max(1, route.delivery.concurrency))
        self.parked = False
        self.notify()

    def reset(self, cursor: Cursor) -> None:
        """The cursor was moved by hand (``subscribe reset``): continue from there."""
        logger.info("route %s: cursor moved to %d; continuing from there", self.route.name, cursor.position)
        self.generation += 1
        self.epoch = cursor.epoch
        self.mark = Watermark(cursor.position)
        self.committed = cursor.position
        self.idle = False
        self.notify()

    async def stop(self) -> None:
        """Stop taking new events; let in-flight deliveries finish."""
        self.stopped = True
        self.notify()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in [self._task, *self.tasks]:
            if task is not None:
                task.cancel()

    @property
    def in_flight(self) -> int:
        return self.mark.in_flight + self.retrying

    def progress(self) -> Progress | None:
        """What to commit now, or None when nothing changed since the last commit."""
        position = self.mark.position
        if position == self.committed and not (self.delivered or self.failed or self.last_error):
            return None
        p = Progress(
            route=self.route.name,
            position=position,
            epoch=self.epoch,
            delivered=self.delivered,
            failed=self.failed,
            last_error=self.route.mask(self.last_error) if self.last_error else None,
            last_error_at=self.last_error_at,
            in_flight=self.in_flight,
            breaker=self.breaker.state,
        )
        return p

    def committed_progress(self, p: Progress) -> None:
        self.committed = max(self.committed, p.position)
        self.delivered -= p.delivered
        self.failed -= p.failed
        if self.last_error_at == p.last_error_at:
            self.last_error = None

    def record_failure(self, error: str | None, now: float) -> None:
        self.failed += 1
        self.last_error = error
        self.last_error_at = now

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        engine = self.engine
        try:
            while not self.stopped:
                if self.route.paused or self.parked:
                    self.idle = True
                    await self._sleep(None)
                    continue
                wait = self.breaker.reopen_in(engine.clock())
                if wait > 0:
                    await self._sleep(wait)
                    continue
                generation = self.generation
                batch = event_log.read_after(engine.store, self.route.broker, self.mark.read, BATCH)
                if not batch:
                    self.idle = self.mark.in_flight == 0
                    await self._sleep(None)
                    continue
                self.idle = False
                if self.route.delivery.ordered:
                    await self._ordered(batch, generation)
                else:
                    await self._unordered(batch, generation)
        except asyncio.CancelledError:
            raise
        except Exception:  # the worker never dies on one route's fault: log, back off, go on
            logger.exception("route %s: dispatcher fault; restarting in 1s", self.route.name)
            if self.route.delivery.ordered:
                # The head event was started but not finished: read it again from the cursor.
                self.mark = Watermark(self.mark.position)
            await asyncio.sleep(1.0)
            if not self.stopped:
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name=f"route:{self.route.name}"
                )

    async def _sleep(self, timeout: float | None) -> None:
        self.wake.clear()
        if self.stopped:
            return
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _unordered(self, batch: list[StoredEvent], generation: int) -> None:
        engine = self.engine
        matches = self.route.matcher.matches_event
        for stored in batch:
            if self.stopped or generation != self.generation:
                return
            mark = self.mark
            if not matches(stored.event):
                mark.skip(stored.seq)
                continue
            await self.sem.acquire()
            while not self.breaker.allow(engine.clock()):
                wait = self.breaker.reopen_in(engine.clock())
                await self._sleep(wait if wait > 0 else 0.05)
                if self.stopped or generation != self.generation:
                    self.sem.release()
                    return
            mark.start(stored.seq)
            task = asyncio.get_running_loop().create_task(self._deliver_new(stored, mark, self.sem))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver_new(self, stored: StoredEvent, mark: Watermark, sem: asyncio.Semaphore) -> None:
        try:
            while True:
                try:
                    await self.engine.settle(
                        self, stored.event, stored.seq, attempt=1, first_failed_at=None, dlq_id=None
                    )
                    break
                except Exception:
                    # The outcome could not be made durable (a retry row or dead letter not
                    # written): the event must stay behind the cursor. Try again shortly; on a
                    # stop it stays unfinished and the next worker delivers it again.
                    logger.exception(
                        "route %s: seq %d not settled; trying again in 1s", self.route.name, stored.seq
                    )
                    if self.stopped:
                        return
                    await asyncio.sleep(1.0)
                    if self.stopped:
                        return
            mark.finish(stored.seq)
        finally:
            sem.release()
            self.engine.dirty = True
            if not mark.in_flight:
                self.notify()  # a caught-up loop sleeping on its wake event can now report idle

    async def _ordered(self, batch: list[StoredEvent], generation: int) -> None:
        engine = self.engine
        matches = self.route.matcher.matches_event
        for stored in batch:
            if self.stopped or generation != self.generation:
                return
            mark = self.mark
            if not matches(stored.event):
                mark.skip(stored.seq)
                continue
            mark.start(stored.seq)
            done = await self._ordered_one(stored, generation)
            if not done:
                return  # stopping, parked or reset: the event stays unfinished behind the cursor
            mark.finish(stored.seq)
            engine.dirty = True

    async def _ordered_one(self, stored: StoredEvent, generation: int) -> bool:
        """Deliver the head event until it is delivered or dead-lettered (True)."""
        engine = self.engine
        row = retries.get(engine.store, self.route.name, stored.seq)
        attempt = row.attempt if row else 0
        due = row.due_at if row else 0.0
        first_failed = row.first_failed_at if row else None
        scheduled = row is not None  # a retry row exists for this head event
        while not self.stopped and generation == self.generation:
            now = engine.clock()
            if due > now:
                if engine.once:
                    self.parked = True
                    return False
                await self._sleep(due - now)
                continue
            if not self.breaker.allow(now):
                await self._sleep(max(self.breaker.reopen_in(now), 0.05))
                continue
            result = await engine.settle(
                self,
                stored.event,
                stored.seq,
                attempt=attempt + 1,
                first_failed_at=first_failed,
                dlq_id=None,
                ordered=True,
                scheduled=scheduled,
            )
            if result.finished:
                return True
            attempt, due, first_failed = result.attempt, result.due_at, result.first_failed_at
            scheduled = True
        return False
