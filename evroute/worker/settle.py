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
from typing import Any

from evroute import tracing
from evroute.cloudevent import CloudEvent
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import DROPPED, dead_letter_copy, next_wait
from evroute.errors import LeaseLost, StoreError
from evroute.routes.model import Route
from evroute.store.base import Deliveries, NewDeadLetter, Retry
from evroute.worker import history
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
    token: Any = None  # the store's handle on the read (a JetStream message to ack, NAK or TERM)
    # For people: the attempt-history row (a failure, or the success ending a run of failures)
    # written in the same transaction, and the outcome for the ring `evroute tail` follows.
    tried: history.Attempt | None = None
    result: str = history.DELIVERED
    attempt: int = 0
    started: float = 0.0
    at: float = 0.0


class Settler:
    def __init__(
        self,
        store: Deliveries,
        metrics: Metrics,
        clock: Callable[[], float],
        *,
        max_event_bytes: Callable[[], int],
        on_reply: Callable[[str], None],
        on_retry: Callable[[], None],
        on_dead_letter: Callable[[Route, int, CloudEvent, Outcome], None],
        on_lease_lost: Callable[[], None],
        recent: history.Recent | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.max_event_bytes = max_event_bytes
        self.on_reply = on_reply
        self.on_retry = on_retry
        self.on_dead_letter = on_dead_letter
        self.on_lease_lost = on_lease_lost
        self.recent = recent if recent is not None else history.Recent()
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
        token: Any = None,
    ) -> Decision:
        route = rt.route
        now = self.clock()
        name, broker = route.name, route.broker
        if rt.flow.finish(outcome, now):
            logger.warning(
                "route %s: the subscriber answered 429 with Retry-After; the route waits %.1fs",
                name,
                rt.flow.wait(now),
            )
        if outcome.kind is Kind.SUCCESS:
            rt.breaker.success()
            rt.record_success()
            self.metrics.delivered(name, broker, max(outcome.elapsed, now - started))
            logger.debug("route %s: delivered seq %d id %s (attempt %d)", name, seq, event.id, attempt)
            # A reply over maxEventBytes never gets here: delivery judged it an invalid reply.
            forget = scheduled or attempt > 1 or dlq_id is not None
            # The success that ends a run of failures joins the attempt history.
            tried = history.attempt_row(route, seq, attempt, outcome, started, now) if forget else None
            return Decision(
                route, seq, event, outcome, Settled(True), outcome.reply, forget, dlq_id, token=token,
                tried=tried, result=history.DELIVERED, attempt=attempt, started=started, at=now,
            )  # fmt: skip
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
            return Decision(
                route, seq, event, outcome, Settled(not ordered, spent, due, first), retry=row, token=token,
                tried=history.attempt_row(route, seq, attempt, outcome, started, now),
                result=history.RETRYING, attempt=attempt, started=started, at=now,
            )  # fmt: skip
        # A subscriber that echoes its credentials (a 401 page quoting the Authorization
        # header, a program printing its key) must not put them in `dlq show` or the sink.
        outcome = replace(outcome, body=route.mask_bytes(outcome.body))
        if outcome.error in ("hop limit", DROPPED):
            reason = outcome.error
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
        return Decision(
            route, seq, event, outcome, Settled(True), replaced=dlq_id, letter=letter, token=token,
            tried=history.attempt_row(route, seq, attempt, outcome, started, now),
            result=history.DEAD, attempt=attempt, started=started, at=now,
        )  # fmt: skip

    # ------------------------------------------------------------------ writing

    async def write(self, d: Decision) -> None:
        """Store one decision; raises StoreError (LeaseLost when another worker took over)."""
        route = d.route
        tried = [d.tried] if d.tried is not None else []
        if d.retry is not None:
            await self.store.retry(d.retry, d.token, attempts=tried)
            self.on_retry()
            return
        if d.letter is not None:
            if route.dead_letter_topic is not None:
                # Dapr's deadLetterTopic: the copy is stored before the dead letter, so a crash
                # in between redoes both and the copy's derived id keeps it from doubling.
                await self._publish_dead_letter_topic(route, d.event)
            dlq_id = await self.store.dead_letter(d.letter, d.token, d.replaced, attempts=tried)
            self.metrics.dead_lettered(route.name, route.broker)
            letter = d.letter
            tracing.dead_lettered(
                d.event,
                route=route.name,
                broker=route.broker,
                reason=letter.reason,
                attempts=letter.attempts,
                error=letter.error or "",
            )
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
            result = await self.store.append(route.broker, [d.reply], self.clock())
            await history.link_reply(self.store, route, d.seq, result.seqs)
            if result.stored:
                self.metrics.published(route.broker)
                self.on_reply(route.broker)
        # Delivered: on SQLite a first attempt costs nothing here (the watermark covers it);
        # a retried or replayed one drops its retry row and dead letter; JetStream acks.
        await self.store.succeeded(
            route.name, d.seq, d.token, scheduled=d.forget, dlq_id=d.replaced, attempts=tried
        )

    async def _publish_dead_letter_topic(self, route: Route, event: CloudEvent) -> None:
        copy = dead_letter_copy(event, route.name, route.dead_letter_topic or "")
        if copy is None:
            logger.warning(
                "route %s: %s not published to its deadLetterTopic (hop limit)", route.name, event.id
            )
            return
        result = await self.store.append(route.broker, [copy], self.clock())
        if result.stored:
            self.metrics.published(route.broker)
            self.on_reply(route.broker)

    async def persist(self, d: Decision, stopping: Callable[[], bool]) -> bool:
        """Write ``d`` until it is stored (True), or the worker stops or lost its lease (False)."""
        delay = FIRST_BACKOFF
        logged = False
        while True:
            try:
                await self.write(d)
                self.recent.note(d.route, d.seq, d.attempt, d.result, d.outcome, d.started, d.at)
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
