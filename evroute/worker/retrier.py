"""The retry scheduler: delivers what the durable retry schedule says is due.

It takes rows of unordered routes and dead-letter replays of any route; an ordered route's
head event is retried in place by its own dispatcher (head-of-line). Each look asks the
store only for routes that can start an attempt now (not paused, breaker not holding them,
a slot free), and for each at most as many rows as it has free slots: due retries of a
route that cannot start never stand in front of another route's. Due retries a route
cannot start for want of a slot go before its new events (the dispatcher holds back) and
the freed slot wakes the scheduler. Otherwise it sleeps until the next known due time, a
breaker's cooldown, or a new retry: no polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from evroute.cloudevent import CloudEvent
from evroute.store.base import Deliveries, Retry
from evroute.worker.attempt import try_event
from evroute.worker.runtime import RouteRuntime
from evroute.worker.settle import Settler

logger = logging.getLogger("evroute.worker")
MAX_WAIT = 1.0  # other processes' `dlq replay` rows are also noticed by the engine's wake-ups


class Retrier:
    def __init__(
        self,
        runtimes: Callable[[], dict[str, RouteRuntime]],
        *,
        store: Deliveries,
        settler: Settler,
        clock: Callable[[], float],
        session: Callable[[], Any],
    ) -> None:
        self.runtimes = runtimes
        self.store = store
        self.settler = settler
        self.clock = clock
        self.session = session
        self.wake = asyncio.Event()
        self.running: set[tuple[str, int]] = set()
        self._per_route: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False

    def watch(self, rt: RouteRuntime) -> None:
        rt.listen(self.notify, retries=True)

    def notify(self) -> None:
        self.wake.set()

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def stopping(self) -> bool:
        return self.stopped

    async def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    # ------------------------------------------------------------------ one look

    async def step(self, now: float) -> float:
        """Start every due retry that may start now; return seconds until the next look."""
        wait = MAX_WAIT
        runtimes = self.runtimes()
        for rt in runtimes.values():
            if not rt.startable(now):
                rt.want_slot_for_retries(False)
                held = rt.hold_in(now)
                if held > 0:
                    wait = min(wait, held)
                continue
            if await self._start_due(rt, now) and rt.flow.wait(now) > 0:
                wait = min(wait, rt.flow.wait(now))  # due rows wait for the rate limit's next token
        following = await self.store.next_due(list(runtimes), after=now)
        if following is not None:
            wait = min(wait, following - now)
        return max(wait, 0.0)

    async def _start_due(self, rt: RouteRuntime, now: float) -> bool:
        """Start what may start; True when due rows are left for want of a token or a slot."""
        name = rt.route.name
        head = rt.mark.position if rt.route.delivery.ordered else None
        # Rows already running are still in the table: ask for that many more, and one more
        # to learn whether due rows are left waiting for a slot.
        limit = rt.slots.free + self._per_route[name] + 1
        rows = await self.store.due_for(name, now, limit, upto=head)
        waiting = left = False
        for row in rows:
            if (row.route, row.seq) in self.running:
                continue
            if not rt.can_start(now):
                waiting = rt.slots.free == 0 and rt.startable(now)
                left = True
                break
            event = await self._event(row)  # before the slot and the breaker's probe are taken
            if event is None:
                continue
            if not rt.begin(now):
                break
            self._launch(rt, row, event)
        rt.want_slot_for_retries(waiting)
        return left

    async def _event(self, row: Retry) -> CloudEvent | None:
        stored = await self.store.retry_event(row)  # a replay's event comes from its dead letter
        if stored is not None:
            return stored.event
        logger.warning("route %s: event seq %d is no longer stored; its retry is dropped", row.route, row.seq)
        return None

    def _launch(self, rt: RouteRuntime, row: Retry, event: CloudEvent) -> None:
        self.running.add((row.route, row.seq))
        self._per_route[row.route] += 1
        rt.retrying += 1
        task = asyncio.get_running_loop().create_task(self._deliver(rt, row, event))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, rt: RouteRuntime, row: Retry, event: CloudEvent) -> None:
        try:
            decision = await try_event(
                self.settler,
                rt,
                event,
                row.seq,
                row.attempt + 1,
                self.session(),
                first_failed_at=row.first_failed_at,
                dlq_id=row.dlq_id,
                scheduled=True,
            )
            await self.settler.persist(decision, self.stopping)
        except Exception:
            logger.exception(
                "route %s: retry of seq %d failed unexpectedly; it stays scheduled", row.route, row.seq
            )
        finally:
            rt.retrying -= 1
            self.running.discard((row.route, row.seq))
            self._per_route[row.route] -= 1
            rt.end()
            self.wake.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """The scheduler's loop (run under the engine's supervisor)."""
        while not self.stopped:
            self.wake.clear()
            wait = await self.step(self.clock())
            if self.stopped:
                return
            if not self.wake.is_set():
                try:
                    await asyncio.wait_for(self.wake.wait(), wait if wait > 0 else 0.001)
                except TimeoutError:
                    pass
