"""One route's dispatcher: read the broker after the cursor, filter, deliver, settle.

Unordered routes keep up to ``concurrency`` deliveries in flight; a failed event moves to
the durable retry schedule (the retrier takes it from there) so it never holds the others
back. Ordered routes deliver one event at a time in seq order and keep a failing event at
the head (its retries are waited out here) until it is delivered or dead-lettered, as
Knative's Kafka broker does in ordered mode.

Before each event the dispatcher looks again at its route: a pause, a reload that changed
the route, or a cursor reset takes effect at the next event, not the next batch. It sleeps
on one wake event, set by new events, by its route's runtime (slot freed, route changed,
breaker) and by a timer only for a known time (the breaker's cooldown, a head retry's due).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from evroute.clock import rfc3339
from evroute.delay import held_until
from evroute.store.base import Deliveries, Retry, StoredEvent
from evroute.worker.attempt import try_event
from evroute.worker.runtime import RouteRuntime
from evroute.worker.settle import Settler
from evroute.worker.tracker import Watermark

logger = logging.getLogger("evroute.worker")
BATCH = 256
FAULT_BACKOFF = 1.0


class Dispatcher:
    def __init__(
        self,
        rt: RouteRuntime,
        *,
        store: Deliveries,
        settler: Settler,
        clock: Callable[[], float],
        session: Callable[[], Any],
        once: bool = False,
    ) -> None:
        self.rt = rt
        self.store = store
        self.settler = settler
        self.clock = clock
        self.session = session
        self.once = once
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self.idle = False  # caught up: nothing left to read and nothing in flight
        self.parked = False  # --once: an ordered head waits for a retry that is not due yet
        self.held = False  # the breaker holds the route (open, or its probe is out)
        self.sending = False  # an ordered route's head event is being attempted right now
        rt.listen(self.notify)

    # ------------------------------------------------------------------ lifecycle

    def notify(self) -> None:
        self.wake.set()

    @property
    def route_name(self) -> str:
        return self.rt.route.name

    def done_for_now(self) -> bool:
        """``--once``: nothing this route can do now (caught up, paused, held or parked)."""
        if self.tasks or self.sending:
            return False
        return self.idle or self.held or self.parked

    def stopping(self) -> bool:
        return self.stopped

    async def stop(self) -> None:
        """Stop taking new events; let in-flight deliveries finish."""
        self.stopped = True
        self.notify()
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """The route's loop (run under the engine's supervisor, restarted after a fault)."""
        rt = self.rt
        if rt.route.delivery.ordered and rt.mark.in_flight:
            # Restarted after a fault: the head event was started but not finished.
            rt.mark = Watermark(rt.mark.position)
        parked_at = -1
        while not self.stopped:
            if self.parked and parked_at != rt.version:
                self.parked = False
            if rt.route.paused or self.parked:
                self.idle = True
                await self._sleep(None)
                continue
            wait = rt.breaker.reopen_in(self.clock())
            if wait > 0:
                self.held = True
                await self._sleep(wait)
                continue
            self.held = False
            version, generation = rt.version, rt.generation
            batch = await self.store.read(rt.route.name, rt.route.broker, rt.mark.read, BATCH)
            if not batch:
                self.idle = rt.mark.in_flight == 0
                await self._sleep(None)
                continue
            self.idle = False
            if rt.route.delivery.ordered:
                await self._ordered(batch, version, generation)
                if self.parked:
                    parked_at = rt.version
            else:
                await self._unordered(batch, version, generation)

    async def _sleep(self, timeout: float | None) -> None:
        # Cleared after waking, never before: a wake-up that arrives before we wait is kept.
        if self.stopped:
            return
        if not self.wake.is_set():
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
        self.wake.clear()

    def _moved(self, version: int, generation: int) -> bool:
        """The route changed, was paused or its cursor moved since the batch was read."""
        rt = self.rt
        return self.stopped or rt.version != version or rt.generation != generation or rt.route.paused

    async def _slot(self, version: int, generation: int) -> bool:
        """Wait for a slot to deliver one new event (due retries go first)."""
        rt = self.rt
        while True:
            if self._moved(version, generation):
                return False
            now = self.clock()
            if not rt.retry_waiting and rt.begin(now):
                self.held = False
                return True
            self.held = not rt.breaker.permits(now)
            wait = rt.hold_in(now)
            await self._sleep(wait if wait > 0 else None)

    # ------------------------------------------------------------------ unordered

    async def _unordered(self, batch: Sequence[StoredEvent], version: int, generation: int) -> None:
        rt = self.rt
        matches = rt.route.matcher.matches_event
        loop = asyncio.get_running_loop()
        for stored in batch:
            if self._moved(version, generation):
                return
            if not matches(stored.event) or await self._held(stored):
                rt.mark.skip(stored.seq)
                continue
            if not await self._slot(version, generation):
                return
            mark = rt.mark
            mark.start(stored.seq)
            task = loop.create_task(self._deliver_new(stored, mark))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _held(self, stored: StoredEvent) -> bool:
        """A delayed event (``evroutedeliverat`` ahead): put it on the schedule, due then, and
        go on with the events after it (it never holds them back). Raises StoreError when the
        schedule cannot be written; the loop then restarts and reads the event again."""
        due = held_until(stored.event, self.clock())
        if due is None:
            return False
        rt = self.rt
        # On the schedule as a first delivery: no attempt made yet, no error (SQLite: a retry
        # row due then; JetStream: the message back with that delay).
        await self.store.retry(Retry(rt.route.name, stored.seq, 0, due, None, None, None, None), stored.token)
        self.settler.on_retry()
        logger.debug("route %s: seq %d scheduled for %s", rt.route.name, stored.seq, rfc3339(due))
        return True

    async def _deliver_new(self, stored: StoredEvent, mark: Watermark) -> None:
        rt = self.rt
        try:
            while True:
                try:
                    decision = await try_event(
                        self.settler,
                        rt,
                        stored.event,
                        stored.seq,
                        stored.attempt,
                        self.session(),
                        first_failed_at=None,
                        token=stored.token,
                    )
                    break
                except Exception:
                    # Not an outcome: a fault in the worker. The event stays behind the cursor.
                    logger.exception(
                        "route %s: seq %d not attempted; trying again in %.0fs",
                        rt.route.name,
                        stored.seq,
                        FAULT_BACKOFF,
                    )
                    await asyncio.sleep(FAULT_BACKOFF)
                    if self.stopped:
                        return
            if await self.settler.persist(decision, self.stopping):
                mark.finish(stored.seq)
        finally:
            rt.end()
            if not mark.in_flight:
                self.notify()  # a caught-up loop sleeping on its wake event can now report idle

    # ------------------------------------------------------------------ ordered

    async def _ordered(self, batch: Sequence[StoredEvent], version: int, generation: int) -> None:
        rt = self.rt
        matches = rt.route.matcher.matches_event
        for stored in batch:
            if self._moved(version, generation):
                return
            if not matches(stored.event) or await self._held(stored):
                rt.mark.skip(stored.seq)
                continue
            mark = rt.mark
            mark.start(stored.seq)
            if not await self._ordered_one(stored, version, generation):
                # Paused, changed, parked or stopping: the head stays unfinished behind the
                # cursor and is read again next time (unless a reset replaced the watermark).
                if rt.mark is mark:
                    rt.mark = Watermark(mark.position)
                return
            mark.finish(stored.seq)

    async def _ordered_one(self, stored: StoredEvent, version: int, generation: int) -> bool:
        """Deliver the head event until it is delivered or dead-lettered (True)."""
        rt = self.rt
        row = await self.store.retry_state(rt.route.name, stored.seq)
        tried = row.attempt if row else stored.attempt - 1
        due = row.due_at if row else 0.0
        first_failed = row.first_failed_at if row else None
        scheduled = row is not None  # a retry row exists for this head event
        while not self._moved(version, generation):
            now = self.clock()
            if due > now:
                if self.once:
                    self.parked = True
                    return False
                await self._sleep(due - now)
                continue
            if not await self._slot(version, generation):
                return False
            self.sending = True
            try:
                decision = await try_event(
                    self.settler,
                    rt,
                    stored.event,
                    stored.seq,
                    tried + 1,
                    self.session(),
                    first_failed_at=first_failed,
                    ordered=True,
                    scheduled=scheduled,
                    token=stored.token,
                )
                if not await self.settler.persist(decision, self.stopping):
                    return False
            finally:
                self.sending = False
                rt.end()
            result = decision.settled
            if result.finished:
                return True
            tried, due, first_failed = result.attempt, result.due_at, result.first_failed_at
            scheduled = True
        return False
