"""The delivery engine: every route's dispatcher, the retrier, batched cursor commits and
wake-ups, in one asyncio loop over one SQLite connection.

``settle`` is where an attempt's outcome (classified by :mod:`evroute.delivery.policy`)
becomes durable state: success, a retry row, or a dead letter. Dispatchers and the
retrier both go through it, so a first attempt, a retry and a dead-letter replay behave
the same way.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from evroute import tracing
from evroute.cloudevent import CloudEvent
from evroute.delivery import deliver, new_session
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import DROPPED, dead_letter_copy, dls_event, next_wait
from evroute.errors import EvrouteError, StoreError
from evroute.routes.model import Route, RouteSet, Settings
from evroute.store import Store, cursors, deadletters, retries
from evroute.store import attempts as attempt_log
from evroute.store import log as event_log
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry
from evroute.worker import history
from evroute.worker.dispatcher import Dispatcher
from evroute.worker.metrics import Metrics
from evroute.worker.retrier import Retrier

logger = logging.getLogger("evroute.worker")

COMMIT_INTERVAL = 0.1  # cursor commits are batched: at most ten a second, never one per event
POLL_INTERVAL = 0.002  # PRAGMA data_version check: wakes on other processes' commits within ~2 ms
EPOCH_CHECK_INTERVAL = 0.1
LAG_INTERVAL = 5.0
CHECKPOINT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Settled:
    finished: bool  # the event is done for this route's dispatcher (delivered, retry row, dead letter)
    attempt: int = 0  # attempts counted so far (for an ordered head that must be retried in place)
    due_at: float = 0.0
    first_failed_at: float | None = None


class Engine:
    def __init__(
        self,
        store: Store,
        routeset: RouteSet,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        once: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.once = once
        self.routeset = routeset
        self.settings: Settings = routeset.settings
        self.dispatchers: dict[str, Dispatcher] = {}
        self.retiring: list[Dispatcher] = []
        self.retrier = Retrier(self)
        self.session: Any = None
        self.dirty = False
        self.stopping = False
        self.side_tasks: set[asyncio.Task[None]] = set()  # dead-letter-sink forwards
        self.recent = history.Recent()  # outcomes for `evroute tail`, written with the cursor commit
        self._loops: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.session = new_session()
        # WAL checkpoints copy pages back into the database file and can take tens of
        # milliseconds: never inside the delivery loop. A thread with its own connection
        # checkpoints instead (publishers keep SQLite's automatic checkpoints too).
        self.store.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._apply_routes(self.routeset)
        self.retrier.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._commit_loop(), name="commits"),
            loop.create_task(self._poll_loop(), name="wakeups"),
            loop.create_task(self._checkpoint_loop(), name="checkpoints"),
        ]

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking events, let in-flight deliveries finish (up to ``grace``), commit."""
        self.stopping = True
        everyone = [*self.dispatchers.values(), *self.retiring]
        waits = [d.stop() for d in everyone] + [self.retrier.stop()]
        limit = (
            grace
            if grace is not None
            else max((d.route.delivery.timeout for d in everyone), default=30.0) + 1
        )
        try:
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), limit)
        except TimeoutError:
            logger.warning(
                "in-flight deliveries did not finish within %.0fs; they will be redelivered", limit
            )
            for d in everyone:
                d.cancel()
        if self.side_tasks:
            await asyncio.wait(list(self.side_tasks), timeout=5.0)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self.commit()
        if self.session is not None:
            await self.session.close()

    def notify(self, broker: str | None = None) -> None:
        for d in self.dispatchers.values():
            if broker is None or d.route.broker == broker:
                d.notify()
        self.retrier.notify()

    # ------------------------------------------------------------------ routes

    def apply(self, routeset: RouteSet) -> None:
        """Swap in a new, valid routes file (hot reload)."""
        self._apply_routes(routeset)

    def _apply_routes(self, routeset: RouteSet) -> None:
        wanted = routeset.by_name()
        cursors.ensure(self.store, [(r.name, r.broker, r.start) for r in wanted.values()], now=self.clock())
        for name in list(self.dispatchers):
            route = wanted.get(name)
            current = self.dispatchers[name]
            if route is None or route.broker != current.route.broker:
                # Removed (or moved to another broker): stop taking events, keep the cursor.
                self.dispatchers.pop(name)
                self._retire(current)
                if route is None:
                    logger.info("route %s removed; its cursor is kept", name)
            elif route != current.route:
                current.update(route)
                logger.info("route %s changed; applies to events not yet dispatched", name)
        for name, route in wanted.items():
            if name in self.dispatchers:
                continue
            cursor = cursors.get(self.store, name)
            assert cursor is not None
            dispatcher = Dispatcher(self, route, cursor)
            self.dispatchers[name] = dispatcher
            dispatcher.start()
            if self.routeset is not routeset:
                logger.info("route %s added at seq %d", name, cursor.position)
        self.routeset = routeset
        self.settings = routeset.settings
        self.store.set_durability(self.settings.durability)
        self.retrier.notify()

    def _retire(self, dispatcher: Dispatcher) -> None:
        self.retiring.append(dispatcher)

        async def finish() -> None:
            await dispatcher.stop()
            self.commit()
            if dispatcher in self.retiring:
                self.retiring.remove(dispatcher)

        self._side(finish())

    def _side(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    # ------------------------------------------------------------------ one attempt

    async def attempt(self, route: Route, event: CloudEvent, attempt: int, seq: int | None = None) -> Outcome:
        """One delivery attempt; a reply is stored in the route's broker before it counts."""
        outcome: Outcome = await deliver(
            route.subscriber,
            event,
            route=route.name,
            broker=route.broker,
            attempt=attempt,
            delivery=route.delivery,
            headers=route.headers,
            signing_secret=route.signing_secret,
            session=self.session,
            transform=route.transform,
            max_event_bytes=self.settings.max_event_bytes,  # a larger reply is an invalid reply
        )
        if outcome.kind is Kind.SUCCESS and outcome.reply is not None:
            try:
                stored = event_log.append(self.store, route.broker, [outcome.reply], now=self.clock())
                history.link_reply(self.store, route, seq, stored.seqs)
                if stored.stored:  # a duplicate (same source and id) was published before
                    self.metrics.published(route.broker)
                    self.notify(route.broker)
            except EvrouteError as exc:
                logger.warning("route %s: reply to %s not stored: %s", route.name, event.id, exc)
                if isinstance(exc, StoreError):
                    outcome = Outcome(
                        Kind.RETRIABLE,
                        outcome.status,
                        f"cannot store reply: {exc}",
                        None,
                        None,
                        None,
                        outcome.elapsed,
                    )
        return outcome

    async def settle(
        self,
        dispatcher: Dispatcher,
        event: CloudEvent,
        seq: int,
        *,
        attempt: int,
        first_failed_at: float | None,
        dlq_id: int | None,
        ordered: bool = False,
        scheduled: bool = False,
    ) -> Settled:
        """Attempt once and make the outcome durable. ``scheduled``: a retry row exists."""
        route = dispatcher.route
        started = self.clock()
        outcome = await self.attempt(route, event, attempt, seq)
        now = self.clock()
        name, broker = route.name, route.broker
        if outcome.kind is Kind.SUCCESS:
            dispatcher.breaker.success()
            dispatcher.delivered += 1
            self.metrics.delivered(name, broker, max(outcome.elapsed, now - started))
            if scheduled or attempt > 1 or dlq_id is not None:
                # The success that ends a run of failures joins the attempt history.
                self._forget(
                    name, seq, dlq_id, history.attempt_row(route, seq, attempt, outcome, started, now)
                )
            self.recent.note(route, seq, attempt, history.DELIVERED, outcome, started, now)
            logger.debug("route %s: delivered seq %d id %s (attempt %d)", name, seq, event.id, attempt)
            return Settled(True)
        was_tripped = dispatcher.breaker.tripped
        dispatcher.breaker.failure(now)
        dispatcher.record_failure(outcome.error, now)
        self.metrics.failed(name, broker)
        first = first_failed_at if first_failed_at is not None else now
        # While the circuit breaker holds the route, failures are the subscriber's outage,
        # not the event's: they cost no attempt, so an outage dead-letters nothing.
        spent = attempt - 1 if (was_tripped or dispatcher.breaker.tripped) else attempt
        if outcome.kind is Kind.RETRIABLE and spent <= route.delivery.retry:
            wait = next_wait(route.delivery, max(spent, 1), outcome)
            wait = max(wait, dispatcher.breaker.reopen_in(now))
            due = now + wait
            self._schedule(
                Retry(name, seq, spent, due, first, outcome.status, route.mask(outcome.error or ""), dlq_id),
                history.attempt_row(route, seq, attempt, outcome, started, now),
            )
            self.recent.note(route, seq, attempt, history.RETRYING, outcome, started, now)
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
            return Settled(not ordered, spent, due, first)
        tried = history.attempt_row(route, seq, attempt, outcome, started, now)
        self.dead_letter(route, seq, event, attempt, outcome, first, now, dlq_id, tried)
        self.recent.note(route, seq, attempt, history.DEAD, outcome, started, now)
        return Settled(True)

    def _schedule(self, retry: Retry, tried: history.Attempt) -> None:
        retries.schedule(self.store, [retry], attempts=[tried])
        self.retrier.notify()

    def _forget(self, route: str, seq: int, dlq_id: int | None, tried: history.Attempt) -> None:
        with self.store.write() as conn:
            attempt_log.insert(conn, [tried])
            conn.execute("DELETE FROM retries WHERE route = ? AND seq = ?", (route, seq))
            if dlq_id is not None:
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (dlq_id,))

    def dead_letter(
        self,
        route: Route,
        seq: int,
        event: CloudEvent,
        attempts: int,
        outcome: Outcome,
        first_failed_at: float,
        now: float,
        replaced: int | None,
        tried: history.Attempt | None = None,
    ) -> int:
        # A subscriber that echoes its credentials (a 401 page quoting the Authorization header,
        # a program printing its key) must not put them in `dlq show` or the dead-letter sink.
        outcome = replace(outcome, body=_mask_body(route, outcome.body))
        if outcome.error in ("hop limit", DROPPED):
            reason = outcome.error
        elif outcome.kind is Kind.PERMANENT:
            reason = "permanent failure"
        else:
            reason = "retries exhausted"
        letter = NewDeadLetter(
            route=route.name,
            broker=route.broker,
            seq=seq if seq > 0 else None,
            event=event,
            attempts=attempts,
            status=outcome.status,
            reason=reason,
            error=route.mask(outcome.error or ""),
            body=outcome.body[:1024] if outcome.body else None,
            first_failed_at=first_failed_at,
            dead_at=now,
        )
        if route.dead_letter_topic is not None:
            # Dapr's deadLetterTopic: the copy is stored before the dead letter, so a crash
            # in between redoes both and the copy's derived id keeps it from doubling.
            self._publish_dead_letter_topic(route, event)
        [dlq_id] = deadletters.add(self.store, [letter], attempts=[tried] if tried else ())
        with self.store.write() as conn:
            conn.execute("DELETE FROM retries WHERE route = ? AND seq = ?", (route.name, seq))
            if replaced is not None:
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (replaced,))
        self.metrics.dead_lettered(route.name, route.broker)
        tracing.dead_lettered(
            event,
            route=route.name,
            broker=route.broker,
            reason=reason,
            attempts=attempts,
            error=letter.error or "",
        )
        logger.warning(
            "route %s: seq %d id %s dead-lettered after %d attempt%s (%s: %s) as dlq %d",
            route.name,
            seq,
            event.id,
            attempts,
            "" if attempts == 1 else "s",
            reason,
            route.mask(outcome.error or "?"),
            dlq_id,
        )
        sink = route.delivery.dead_letter_sink
        if sink is not None:
            self._side(self._forward(route, dlq_id, event, outcome))
        return dlq_id

    def _publish_dead_letter_topic(self, route: Route, event: CloudEvent) -> None:
        copy = dead_letter_copy(event, route.name, route.dead_letter_topic or "")
        if copy is None:
            logger.warning(
                "route %s: %s not published to its deadLetterTopic (hop limit)", route.name, event.id
            )
            return
        event_log.append(self.store, route.broker, [copy], now=self.clock())
        self.metrics.published(route.broker)
        self.notify(route.broker)

    async def _forward(self, route: Route, dlq_id: int, event: CloudEvent, failed: Outcome) -> None:
        """Send the dead letter to the route's deadLetterSink with Knative's error extensions."""
        sink = route.delivery.dead_letter_sink
        assert sink is not None
        forwarded = dls_event(event, route.mask(route.subscriber.describe()), failed.status, failed.body)
        policy = route.delivery
        result = "failed"
        for attempt in range(1, policy.retry + 2):
            outcome = await deliver(
                sink,
                forwarded,
                route=route.name,
                broker=route.broker,
                attempt=attempt,
                delivery=policy,
                headers={},
                signing_secret=None,
                session=self.session,
                dead_letter_sink=True,
            )
            if outcome.kind is Kind.SUCCESS:
                result = f"delivered to {route.mask(sink.describe())}"
                break
            result = f"failed after {attempt} attempt{'s' if attempt > 1 else ''}: {route.mask(outcome.error or '?')}"
            if outcome.kind is Kind.PERMANENT or attempt > policy.retry or self.stopping:
                break
            await asyncio.sleep(next_wait(policy, attempt, outcome))
        try:
            deadletters.set_dls_outcome(self.store, dlq_id, result)
        except StoreError as exc:
            logger.warning("route %s: cannot record dead-letter-sink outcome: %s", route.name, exc)
        if not result.startswith("delivered"):
            logger.warning(
                "route %s: dead letter %d not forwarded: %s (kept in the database)",
                route.name,
                dlq_id,
                result,
            )

    # ------------------------------------------------------------------ background loops

    def commit(self) -> None:
        everyone = [*self.dispatchers.values(), *self.retiring]
        pending = [(d, p) for d in everyone if (p := d.progress()) is not None]
        recent = self.recent.take()
        if not pending and not recent:
            return
        try:
            moved = cursors.commit(self.store, [p for _, p in pending], now=self.clock(), recent=recent)
        except BaseException:
            self.recent.put_back(recent)
            raise
        for d, p in pending:
            if p.route in moved:
                cursor = cursors.get(self.store, p.route)
                if cursor is not None:
                    d.reset(cursor)
            else:
                d.committed_progress(p)

    async def _commit_loop(self) -> None:
        last_lag = 0.0
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            try:
                self.commit()
                now = time.monotonic()
                if now - last_lag >= LAG_INTERVAL:
                    last_lag = now
                    for d in self.dispatchers.values():
                        lag = event_log.count_after(self.store, d.route.broker, d.committed)
                        self.metrics.set_lag(d.route.name, d.route.broker, lag)
                for d in self.dispatchers.values():
                    self.metrics.set_in_flight(d.route.name, d.route.broker, d.in_flight)
            except StoreError as exc:
                logger.warning("cannot commit cursors (will retry): %s", exc)

    async def _checkpoint_loop(self) -> None:
        path = self.store.path

        def checkpoint() -> None:
            conn = sqlite3.connect(path, timeout=1.0)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await asyncio.to_thread(checkpoint)
            except sqlite3.Error as exc:
                logger.debug("checkpoint skipped: %s", exc)

    async def _poll_loop(self) -> None:
        """Notice commits by other processes (publishers, `dlq replay`, `subscribe reset`)."""
        version = self.store.data_version()
        last_epochs = 0.0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            current = self.store.data_version()
            if current == version:
                continue
            version = current
            for d in self.dispatchers.values():
                d.notify()
            # Cursor moves (`subscribe reset`) and new retry rows (`dlq replay`) from other
            # processes are rare: look for them at most every 100 ms, not on every publish.
            now = time.monotonic()
            if now - last_epochs >= EPOCH_CHECK_INTERVAL:
                last_epochs = now
                self._check_epochs()
                self.retrier.notify()

    def _check_epochs(self) -> None:
        rows = self.store.conn.execute("SELECT route, epoch FROM cursors").fetchall()
        for name, epoch in rows:
            d = self.dispatchers.get(name)
            if d is not None and epoch != d.epoch:
                cursor = cursors.get(self.store, name)
                if cursor is not None:
                    d.reset(cursor)

    # ------------------------------------------------------------------ --once / --drain

    def idle(self, drain: bool) -> bool:
        """Nothing left to do now (``--once``), or at all (``--drain``)."""
        if any(not d.idle or d.in_flight for d in self.dispatchers.values()):
            return False
        if self.retiring or self.side_tasks or self.retrier.busy:
            return False
        names = [n for n, d in self.dispatchers.items() if not d.route.paused]
        if drain:
            return retries.count(self.store, names) == 0
        due = retries.due(self.store, self.clock(), names, limit=1)
        return not due

    async def run_until_idle(self, drain: bool) -> None:
        quiet = 0
        while True:
            await asyncio.sleep(0.01)
            self.commit()
            # Two quiet looks in a row: a reply or a retry scheduled in between is not missed.
            quiet = quiet + 1 if self.idle(drain) else 0
            if quiet >= 3:
                return


def _mask_body(route: Route, body: bytes | None) -> bytes | None:
    """``body`` with every secret of ``route`` replaced by ``***``, as :meth:`Route.mask` does for text."""
    if not body or not route.secrets:
        return body
    for secret in sorted(route.secrets, key=len, reverse=True):
        if secret:
            body = body.replace(secret.encode("utf-8"), b"***")
    return body
