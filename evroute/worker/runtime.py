"""One route at run time: its definition, circuit breaker, delivery slots, cursor watermark
and counters, and the one question the dispatcher and the retrier both ask: may this route
start an attempt now?

A runtime lives as long as the route is loaded. A reload changes it in place (``update``):
the slots stay the same object, so a delivery always gives its slot back to the count it
took it from and a route never runs more than its concurrency, whatever the reload did.
Whoever waits on a route (its dispatcher, the retrier) registers a listener and is woken
when a slot frees, the route is paused or resumed, or the breaker lets deliveries through
again: no polling.
"""

from __future__ import annotations

from collections.abc import Callable

from evroute.routes.model import Route
from evroute.store.cursors import Cursor, Progress
from evroute.worker.flow import RouteFlow
from evroute.worker.tracker import Breaker, Watermark


class Slots:
    """A route's delivery concurrency: at most ``limit`` attempts at once.

    Unlike a semaphore the limit may change while attempts run: lowering it lets the running
    ones finish and starts nothing new until the count is below the new limit.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1


class RouteRuntime:
    def __init__(self, route: Route, cursor: Cursor) -> None:
        self.route = route
        self.version = 0  # bumped by every change of the route: a dispatcher re-reads
        self.breaker = Breaker(route.delivery.circuit_breaker)
        self.slots = Slots(_concurrency(route))
        self.flow = RouteFlow(route, cursor.updated_at)  # rate limit, Retry-After, consumer group
        self.epoch = cursor.epoch
        self.mark = Watermark(cursor.position)
        self.committed = cursor.position
        self.generation = 0  # bumped when the cursor is moved under us: stale work is dropped
        self.retrying = 0  # attempts of scheduled retries in flight (run by the retrier)
        self.retry_waiting = False  # due retries wait for a slot: they go before new events
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._shown_breaker = "closed"  # the breaker state last committed for `status`
        self._probe = False  # the attempt running holds the half-open breaker's probe
        self._listeners: list[Callable[[], None]] = []
        self._retry_listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ waking

    def listen(self, callback: Callable[[], None], *, retries: bool = False) -> None:
        """Call ``callback`` when attempts may start again. A ``retries`` listener (the retry
        scheduler) hears of a freed slot only while due retries wait for one."""
        (self._retry_listeners if retries else self._listeners).append(callback)

    def changed(self) -> None:
        """Something that decides whether attempts may start changed: wake every waiter."""
        for callback in self._listeners:
            callback()
        for callback in self._retry_listeners:
            callback()

    def want_slot_for_retries(self, waiting: bool) -> None:
        """Due retries wait for a slot (new events hold back), or no longer do."""
        if self.retry_waiting and not waiting:
            self.retry_waiting = False
            for callback in self._listeners:
                callback()
        else:
            self.retry_waiting = waiting

    # ------------------------------------------------------------------ starting attempts

    @property
    def name(self) -> str:
        return self.route.name

    def startable(self, now: float) -> bool:
        """Not paused, not held by the breaker, the rate limit or a Retry-After (slots aside)."""
        return not self.route.paused and self.breaker.permits(now) and self.flow.wait(now) <= 0

    def hold_in(self, now: float) -> float:
        """Seconds until the breaker, the rate limit and any Retry-After let attempts start."""
        return max(self.breaker.reopen_in(now), self.flow.wait(now))

    def can_start(self, now: float) -> bool:
        """May this route start an attempt now?"""
        return self.slots.free > 0 and self.startable(now)

    def begin(self, now: float) -> bool:
        """Take a slot (and, when half-open, the breaker's one probe, and a rate-limit token) for
        an attempt. An event that finds no token waits behind the cursor: no attempt is spent."""
        if self.route.paused or self.flow.holds(now) or not self.slots.take():
            return False
        probing = self.breaker.state != "closed"
        if not self.breaker.allow(now):
            self.slots.give()
            return False
        self._probe = probing and self.breaker.state == "half-open"
        self.flow.take(now)
        return True

    def end(self) -> None:
        """An attempt started with :meth:`begin` is over (its outcome is settled or abandoned)."""
        self.slots.give()
        if self.retry_waiting or self._probe:
            self._probe = False
            self.changed()
        else:
            for callback in self._listeners:
                callback()

    @property
    def in_flight(self) -> int:
        return self.mark.in_flight + self.retrying

    # ------------------------------------------------------------------ changes

    def update(self, route: Route) -> None:
        """Apply a changed route (hot reload) to events not yet dispatched."""
        old = self.route
        self.route = route
        self.version += 1
        if route.delivery.circuit_breaker != old.delivery.circuit_breaker:
            self.breaker.configure(route.delivery.circuit_breaker)
        self.slots.limit = _concurrency(route)
        self.flow.update(route)
        self.changed()

    def reset(self, cursor: Cursor) -> None:
        """The cursor was moved by hand (``subscribe reset``): continue from there."""
        self.generation += 1
        self.epoch = cursor.epoch
        self.mark = Watermark(cursor.position)
        self.committed = cursor.position
        self.changed()

    # ------------------------------------------------------------------ counters

    def record_success(self) -> None:
        self.delivered += 1

    def record_failure(self, error: str | None, now: float) -> None:
        self.failed += 1
        self.last_error = error
        self.last_error_at = now

    def progress(self, now: float) -> Progress | None:
        """What to commit now, or None when nothing changed since the last commit."""
        position = self.mark.position
        shown = self.breaker.state_at(now)
        if (
            position == self.committed
            and shown == self._shown_breaker
            and not (self.delivered or self.failed or self.last_error)
        ):
            return None
        return Progress(
            route=self.route.name,
            position=position,
            epoch=self.epoch,
            delivered=self.delivered,
            failed=self.failed,
            last_error=self.route.mask(self.last_error) if self.last_error else None,
            last_error_at=self.last_error_at,
            in_flight=self.in_flight,
            breaker=shown,
        )

    def committed_progress(self, p: Progress) -> None:
        self.committed = max(self.committed, p.position)
        self.delivered -= p.delivered
        self.failed -= p.failed
        self._shown_breaker = p.breaker
        if self.last_error_at == p.last_error_at:
            self.last_error = None


def _concurrency(route: Route) -> int:
    return 1 if route.delivery.ordered else max(1, route.delivery.concurrency)
