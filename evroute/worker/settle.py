"""Where an attempt's outcome (classified by :mod:`evroute.delivery.policy`) becomes stored
state: delivered (its reply stored, its retry row and replayed dead letter gone), a retry
row, or a dead letter.

Settling has two halves. :meth:`Settler.decide` runs once per outcome: it updates the
route's breaker, counters and metrics and says what must be written. :meth:`Settler.persist`
writes it and, when the database refuses, writes it again (backing off) until it is stored,
the worker stops, or the lease is lost. A write that fails never sends the event to the
subscriber again: the attempt happened once, only its record is retried. Until it is stored
the event stays behind the cursor, so a crash redelivers it.

Depends on the store, the delivery policy and the metrics only; dispatchers and the retrier
call it, so a first attempt, a retry and a dead-letter replay are settled the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from evroute.cloudevent import CloudEvent, check_size
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import next_wait
from evroute.errors import EvrouteError, LeaseLost, StoreError
from evroute.routes.model import Route
from evroute.store import Store, deadletters, retries
from evroute.store import log as event_log
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry
from evroute.worker.metrics import Metrics
from evroute.worker.runtime import RouteRuntime

logger = logging.getLogger("evroute.worker")

FIRST_BACKOFF = 0.05
MOST_BACKOFF = 1.0


@dataclass(frozen=True, slots=True)
class Settled:
    finished: bool  # the event is done for this route's dispatcher (delivered, retry row, dead letter)
    attempt: int = 0  # attempts counted so far (for an ordered head that must be retried in place)
    due_at: float = 0.0
    first_failed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What one outcome means for the stored state, written by :meth:`Settler.persist`."""

    route: Route
    seq: int
    event: CloudEvent
    outcome: Outcome
    settled: Settled
    reply: CloudEvent | None = None  # a reply to store in the route's broker
    forget: bool = False  # drop the retry row (and the replayed dead letter)
    replaced: int | None = None  # the dead letter a replay came from
    retry: Retry | None = None
    letter: NewDeadLetter | None = None


class Settler:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float],
        *,
        holder: str | None = None,
        max_event_bytes: Callable[[], int],
        on_reply: Callable[[str], None],
        on_retry: Callable[[], None],
        on_dead_letter: Callable[[Route, int, CloudEvent, Outcome], None],
        on_lease_lost: Callable[[], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.holder = holder
        self.max_event_bytes = max_event_bytes
        self.on_reply = on_reply
        self.on_retry = on_retry
        self.on_dead_letter = on_dead_letter
        self.on_lease_lost = on_lease_lost
        self.sleep = sleep

    # ------------------------------------------------------------------ deciding

    def decide(
        self,
        rt: RouteRuntime,
        event: CloudEvent,
        seq: int,
        outcome: Outcome,
        *,
        attempt: int,
        started: float,
        first_failed_at: float | None,
        dlq_id: int | None,
        ordered: bool = False,
        scheduled: bool = False,
    ) -> Decision:
        route = rt.route
        now = self.clock()
        name, broker = route.name, route.broker
        if outcome.kind is Kind.SUCCESS:
            rt.breaker.success()
            rt.record_success()
            self.metrics.delivered(name, broker, max(outcome.elapsed, now - started))
            logger.debug("route %s: delivered seq %d id %s (attempt %d)", name, seq, event.id, attempt)
            reply = outcome.reply
            if reply is not None:
                try:
                    check_size(reply, self.max_event_bytes())
                except EvrouteError as exc:
                    logger.warning("route %s: reply to %s not stored: %s", name, event.id, exc)
                    reply = None
            forget = scheduled or attempt > 1 or dlq_id is not None
            return Decision(route, seq, event, outcome, Settled(True), reply, forget, dlq_id)
        was_tripped = rt.breaker.tripped
        if outcome.kind is Kind.RETRIABLE:
            rt.breaker.failure(now)  # only a retriable failure speaks of the subscriber's health
        else:
            rt.breaker.answered()
        rt.record_failure(outcome.error, now)
        self.metrics.failed(name, broker)
        first = first_failed_at if first_failed_at is not None else now
        # While the circuit breaker holds the route, failures are the subscriber's outage,
        # not the event's: they cost no attempt, so an outage dead-letters nothing.
        spent = attempt - 1 if (was_tripped or rt.breaker.tripped) else attempt
        if outcome.kind is Kind.RETRIABLE and spent <= route.delivery.retry:
            wait = next_wait(route.delivery, max(spent, 1), outcome)
            wait = max(wait, rt.breaker.reopen_in(now))
            due = now + wait
            error = route.mask(outcome.error or "")
            row = Retry(name, seq, spent, due, first, outcome.status, error, dlq_id)
            self.metrics.retried(name, broker)
            logger.warning(
                "route %s: seq %d id %s attempt %d/%d failed: %s; retry in %.1fs",
                name,
                seq,
                event.id,
                attempt,
                route.delivery.retry + 1,
                route.mask(outcome.error or "?"),
                wait,
            )
            return Decision(route, seq, event, outcome, Settled(not ordered, spent, due, first), retry=row)
        # A subscriber that echoes its credentials (a 401 page quoting the Authorization
        # header, a program printing its key) must not put them in `dlq show` or the sink.
        outcome = replace(outcome, body=mask_body(route, outcome.body))
        if outcome.error == "hop limit":
            reason = "hop limit"
        elif outcome.kind is Kind.PERMANENT:
            reason = "permanent failure"
        else:
            reason = "retries exhausted"
        letter = NewDeadLetter(
            route=name,
            broker=broker,
            seq=seq if seq > 0 else None,
            event=event,
            attempts=attempt,
            status=outcome.status,
            reason=reason,
            error=route.mask(outcome.error or ""),
            body=outcome.body[:1024] if outcome.body else None,
            first_failed_at=first,
            dead_at=now,
        )
        return Decision(route, seq, event, outcome, Settled(True), replaced=dlq_id, letter=letter)

    # ------------------------------------------------------------------ writing

    def write(self, d: Decision) -> None:
        """Store one decision; raises StoreError (LeaseLost when another worker took over)."""
        route = d.route
        if d.retry is not None:
            retries.schedule(self.store, [d.retry], self.holder)
            self.on_retry()
            return
        if d.letter is not None:
            dlq_id = deadletters.bury(self.store, d.letter, d.seq, d.replaced, self.holder)
            self.metrics.dead_lettered(route.name, route.broker)
            letter = d.letter
            logger.warning(
                "route %s: seq %d id %s dead-lettered after %d attempt%s (%s: %s) as dlq %d",
                route.name,
                d.seq,
                d.event.id,
                letter.attempts,
                "" if letter.attempts == 1 else "s",
                letter.reason,
                letter.error or "?",
                dlq_id,
            )
            if route.delivery.dead_letter_sink is not None:
                self.on_dead_letter(route, dlq_id, d.event, d.outcome)
            return
        if d.reply is not None:
            # Appending is idempotent (the broker ignores a (source, id) it already holds), so
            # a write tried again never stores the reply twice.
            result = event_log.append(self.store, route.broker, [d.reply], now=self.clock())
            if result.stored:
                self.metrics.published(route.broker)
                self.on_reply(route.broker)
        if d.forget:
            retries.forget(self.store, route.name, d.seq, d.replaced, self.holder)

    async def persist(self, d: Decision, stopping: Callable[[], bool]) -> bool:
        """Write ``d`` until it is stored (True), or the worker stops or lost its lease (False)."""
        delay = FIRST_BACKOFF
        logged = False
        while True:
            try:
                self.write(d)
                if logged:
                    logger.info("route %s: seq %d settled after all", d.route.name, d.seq)
                return True
            except LeaseLost:
                self.on_lease_lost()
                return False
            except StoreError as exc:
                if not logged:
                    logged = True
                    logger.warning(
                        "route %s: seq %d not settled (%s); writing it again, not delivering it again",
                        d.route.name,
                        d.seq,
                        exc,
                    )
            if stopping():
                return False  # it stays behind the cursor: the next worker delivers it again
            await self.sleep(delay)
            delay = min(delay * 2, MOST_BACKOFF)
            if stopping():
                return False


def mask_body(route: Route, body: bytes | None) -> bytes | None:
    """``body`` with every secret of ``route`` replaced by ``***``, as :meth:`Route.mask` does for text."""
    if not body or not route.secrets:
        return body
    for secret in sorted(route.secrets, key=len, reverse=True):
        if secret:
            body = body.replace(secret.encode("utf-8"), b"***")
    return body
