""":class:`NatsDeliveries`: the seam's worker half on JetStream.

One connection per worker, on the worker's own loop, reconnecting forever (one log line per
loss and per recovery). Each route gets a :class:`~evroute.store.nats.consumers.Puller` on its
durable consumer; every worker pulls from every route, and the server spreads the messages.

- ``read`` returns what the consumer hands this worker, redeliveries included, each with its
  delivery count as the attempt; ``after`` is not needed (the consumer knows its position).
- ``succeeded`` acks; ``retry`` NAKs with the delay to ``due_at``; ``dead_letter`` stores the
  record (waiting for its PubAck) and then terminates the message.
- A delayed event (``evroutedeliverat`` after its publish time) spends its first delivery on
  the hold: a NAK with the remaining delay, or, when first read after its time, a NAK for at
  once; its attempts are the later deliveries (:func:`~evroute.store.nats.consumers.spent_on_hold`).
- A replayed dead letter comes back through ``read`` on the route's replay subject; its
  success removes the record, its new dead letter replaces the old one.
- ``commit`` keeps the counters for the heartbeat; no position is written (acks are the
  position). The recent outcomes go to stream ``EVROUTE_OUTCOMES`` (``outcomes.py``, for
  ``tail`` and the console); attempt history and reply links are SQLite's: this store drops them.
- ``watch`` wakes the worker when a puller's inbox receives something (messages, or the
  server's status when a pull request ran out or the consumer was recreated).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evroute.cloudevent import CloudEvent, make_event
from evroute.store.base import Cursor, NewDeadLetter, Progress, Retry, RouteStart
from evroute.store.nats import connection, consumers, deadletters, kv, names, outcomes, status, streams
from evroute.store.nats.consumers import Puller
from evroute.store.records import AppendResult, StoredEvent

log = logging.getLogger("evroute.store.nats")

READ_WAIT = 0.25  # how long one read waits on the server for a first message (a long poll)
EPOCH_CHECK = 1.0
SAVE_EVERY = 1.0  # seconds between writes of the route counters outside heartbeats


class NatsDeliveries:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.nc: Any = None
        self.js: Any = None
        self.pullers: dict[str, Puller] = {}
        self.read_wait = READ_WAIT
        self.routes: dict[str, dict[str, Any]] = {}  # per route counters for the heartbeat
        self.since = time.time()
        self._epochs: dict[str, int] = {}
        self._epochs_at = 0.0
        self._epoch_task: asyncio.Future[None] | None = None
        self._reported: dict[str, int] = {}  # epochs as the last commit reported them
        self._arrivals = 0  # bumped by every message on a puller's inbox: the wake-up signal
        self._arrival = asyncio.Event()
        # messages handed to the engine and not settled yet, per route by stream seq: the
        # engine finishes a filtered-out event without a call, so a commit acks those it covers
        self.unsettled: dict[str, dict[int, Any]] = {}
        # ordered heads waiting to be retried in place: (keep-alive task, message, due time)
        self.kept: dict[tuple[str, int], tuple[asyncio.Task[None], Any, float]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # presence: the holder id the runner joins with (a private one until then)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.live = False
        self.counters: dict[str, int] = {}
        self._dirty = False
        self._saved = 0.0
        self._beat_failing = False
        self._saving: asyncio.Future[bool] | None = None
        self._outcomes_failing = False

    async def _connect(self) -> Any:
        """The worker's own connection, on the loop that attached (reconnecting forever)."""
        if self.js is None:
            self.nc = await connection.connect(self.store.options, name="evroute worker", keep_trying=True)
            self.js = self.nc.jetstream()
            self._loop = asyncio.get_running_loop()
        return self.js

    async def _io(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(js, *args)`` on the attached connection; called from any other loop (a
        command, a test), the store's own connection does it, so nothing is left open."""
        if self.js is not None and self._loop is asyncio.get_running_loop():
            return await fn(self.js, *args)
        return await asyncio.wrap_future(self.store._submit(fn, *args))

    async def close(self) -> None:
        try:
            await self._save_counters(force=True)
        except Exception:
            log.warning("could not store the route counters in %s", names.WORKERS_BUCKET)
        # An ordered head still waiting for its retry: the server takes the schedule over.
        for (_route, _seq), (task, msg, due) in list(self.kept.items()):
            task.cancel()
            try:
                await consumers.nak(msg, due - time.time())
            except Exception:
                pass  # gone with the connection: AckWait gives it back
        self.kept.clear()
        for p in self.pullers.values():
            await p.stop()
        self.pullers.clear()
        if self.nc is not None:
            await self.nc.close()
        self.nc = self.js = None

    # ------------------------------------------------------------------ positions

    async def attach(self, routes: Sequence[RouteStart], now: float | None = None) -> dict[str, Cursor]:
        js = await self._connect()
        await self.store._ensure(js, routes)
        replicas = (await self.store._settings(js)).replicas
        await deadletters.ensure_stream(js, replicas)
        await outcomes.ensure_stream(js, replicas)
        wanted = {r.name: r.broker for r in routes}
        for name in list(self.pullers):
            if wanted.get(name) != self.pullers[name].broker:
                await self.pullers.pop(name).stop()
        for name, broker in wanted.items():
            if name not in self.pullers:
                p = Puller(self.nc, name, broker, self._arrived)
                await p.start()
                self.pullers[name] = p
        found = await status.cursors(js)
        self._epochs = {r: c.epoch for r, c in found.items()}
        self._reported = dict(self._epochs)
        self._epochs_at = time.monotonic()
        return {name: found[name] for name in wanted if name in found}

    async def cursor(self, route: str) -> Cursor | None:
        found: dict[str, Cursor] = await self._io(status.cursors)
        return found.get(route)

    async def epochs(self) -> dict[str, int]:
        """The consumers' creation times as last seen; looked up again beside the delivery
        path at most every second (a cluster electing leaders may take seconds to answer)."""
        if time.monotonic() - self._epochs_at >= EPOCH_CHECK and (
            self._epoch_task is None or self._epoch_task.done()
        ):
            self._epochs_at = time.monotonic()
            self._epoch_task = asyncio.ensure_future(self._refresh_epochs())
        return dict(self._epochs)

    async def _refresh_epochs(self) -> None:
        try:
            found = await self._io(status.route_consumers)
        except Exception as exc:  # no answer now: the last known epochs stand
            log.debug("consumer info unavailable: %s", exc)
            return
        self._epochs = {route: status.epoch_of(info) for route, _, info in found}

    async def commit(self, progress: Sequence[Progress], now: float, recent: Sequence[Any] = ()) -> list[str]:
        for p in progress:
            held = self.unsettled.get(p.route)
            if held:
                # read, not started, at or below the watermark: finished without a delivery
                for seq in [s for s in held if s <= p.position]:
                    await consumers.ack(held.pop(seq))
            r = self.routes.setdefault(p.route, {"delivered": 0, "failed": 0, "last_error": None})
            r["delivered"] += p.delivered
            r["failed"] += p.failed
            if p.last_error is not None:
                r["last_error"], r["last_error_at"] = p.last_error, p.last_error_at
            r["in_flight"], r["breaker"] = p.in_flight, p.breaker
        self._dirty = self._dirty or any(p.delivered or p.failed or p.last_error for p in progress)
        if recent:
            await self._publish_outcomes(recent)
        await self._save_counters()
        after = await self.epochs()
        moved = [r for r, e in after.items() if r in self._reported and self._reported[r] != e]
        self._reported = after
        return moved

    async def _publish_outcomes(self, recent: Sequence[Any]) -> None:
        """Queue the outcomes on stream EVROUTE_OUTCOMES; never fails the commit."""
        try:
            if self.nc is None:
                return
            brokers = {name: p.broker for name, p in self.pullers.items()}
            await outcomes.publish(self.nc, recent, brokers)
            if self._outcomes_failing:
                self._outcomes_failing = False
                log.info("recent outcomes are published again")
        except Exception as exc:  # a follower misses these; deliveries go on
            if not self._outcomes_failing:
                self._outcomes_failing = True
                log.warning("cannot publish recent outcomes (evroute tail misses them): %s", exc)

    async def lag(self, broker: str, position: int) -> int:
        return max(0, await self.newest(broker) - position)

    async def newest(self, broker: str) -> int:
        return int(await self._io(streams.last_seq, broker))

    async def link(self, child: int, parent: int, kind: str, route: str) -> None:
        pass  # reply links are the console's, which reads a SQLite file

    # ------------------------------------------------------------------ reading and settling

    async def read(self, route: str, broker: str, after: int, limit: int) -> Sequence[StoredEvent]:
        puller = self.pullers.get(route)
        if puller is None:
            return []
        out = []
        for msg in await puller.next(limit, self.read_wait):
            meta = msg.metadata
            stamp = meta.timestamp
            published = stamp.timestamp() if isinstance(stamp, _dt.datetime) else float(stamp or time.time())
            got = streams.stored(broker, int(meta.sequence.stream), published, msg.data or b"", msg.headers)
            if got is None:
                await self._not_an_event(route, broker, msg, published)
                continue
            held = consumers.spent_on_hold(got.event, published)
            if held and consumers.spend_first_delivery(msg, got.event, time.time()):
                # a delayed event first read after its time: its first delivery is the hold's
                # all the same (back at once), so its attempts count as for one held in time
                await consumers.nak(msg, 0.0)
                continue
            out.append(
                StoredEvent(
                    got.seq, broker, published, got.event, attempt=consumers.attempt(msg, held), token=msg
                )
            )
            self.unsettled.setdefault(route, {})[got.seq] = msg
        return out

    def _settled(self, route: str, seq: int) -> None:
        held = self.unsettled.get(route)
        if held is not None:
            held.pop(seq, None)
        keeper = self.kept.pop((route, seq), None)
        if keeper is not None:
            keeper[0].cancel()

    async def _keep(self, msg: Any, every: float) -> None:
        """An ordered head retried in place: tell the server it is still being worked on, so
        AckWait never hands it to another worker meanwhile."""
        while True:
            await asyncio.sleep(every)
            try:
                await msg.in_progress()
            except Exception:
                pass  # reconnecting: the next beat tries again

    async def _not_an_event(self, route: str, broker: str, msg: Any, published: float) -> None:
        """A message on the subject that is no CloudEvent: dead-lettered with the reason, as
        the worker does with any event it cannot deliver."""
        from evroute.errors import InvalidEvent

        try:
            streams_event: CloudEvent | None = None
            from evroute.store.nats import wire

            wire.decode(msg.data or b"", msg.headers)
        except InvalidEvent as exc:
            reason = str(exc)
        else:  # pragma: no cover - stored() returned None only for an InvalidEvent
            reason = "not a CloudEvent"
        seq = int(msg.metadata.sequence.stream)
        streams_event = make_event(
            type="dev.evroute.invalid",
            source=f"/evroute/nats/{names.stream(broker)}",
            id=str(seq),
            data=msg.data or b"",
            datacontenttype="application/octet-stream",
        )
        letter = NewDeadLetter(
            route=route,
            broker=broker,
            seq=seq,
            event=streams_event,
            attempts=consumers.attempt(msg),
            status=None,
            reason="invalid event",
            error=reason,
            body=None,
            first_failed_at=published,
            dead_at=time.time(),
        )
        await self.dead_letter(letter, msg, None)

    async def succeeded(
        self,
        route: str,
        seq: int,
        token: Any,
        *,
        scheduled: bool,
        dlq_id: int | None,
        attempts: Sequence[Any] = (),
    ) -> None:
        self._settled(route, seq)
        await consumers.ack(token)
        replayed = deadletters.replayed_from(token) if token is not None else None
        if replayed is not None:
            await self._io(deadletters.delete, replayed, route)

    async def retry(self, retry: Retry, token: Any, attempts: Sequence[Any] = ()) -> None:
        if token is None:
            from evroute.errors import StoreError

            raise StoreError("on JetStream a retry is a NAK of a message read from the route's consumer")
        spec = self.store.specs.get(retry.route)
        if spec is not None and spec.ordered and retry.attempt > 0:
            # the dispatcher keeps the head and retries it in place after the delay
            if (retry.route, retry.seq) not in self.kept:
                task = asyncio.get_running_loop().create_task(self._keep(token, spec.ack_wait / 3))
                self.kept[(retry.route, retry.seq)] = (task, token, retry.due_at)
            else:
                task, _, _ = self.kept[(retry.route, retry.seq)]
                self.kept[(retry.route, retry.seq)] = (task, token, retry.due_at)
            await token.in_progress()
            return
        # An unordered retry, or a delayed event's hold (attempt 0: the dispatcher went on
        # past it, so nothing retries it in place): the server keeps it until then. On an
        # ordered route the NAK'd message is its one pending message, so the route waits.
        self._settled(retry.route, retry.seq)
        await consumers.nak(token, retry.due_at - time.time())

    async def dead_letter(
        self, letter: NewDeadLetter, token: Any, replaced: int | None, attempts: Sequence[Any] = ()
    ) -> int:
        replicas = self.store.settings.replicas if self.store.settings else 1
        dlq_id: int = await self._io(deadletters.add, letter, replicas)
        if token is not None:
            self._settled(letter.route, int(consumers.stream_seq(token)))
            await consumers.term(token)
            replaced = replaced if replaced is not None else deadletters.replayed_from(token)
        if replaced is not None:
            await self._io(deadletters.delete, replaced, letter.route)
        return dlq_id

    async def dls_outcome(self, dlq_id: int, outcome: str) -> None:
        letter = await self._io(deadletters.find, dlq_id)
        if letter is not None:
            await self._io(deadletters.annotate_outcome, dlq_id, letter.route, outcome)

    # ------------------------------------------------------------------ schedules the server keeps

    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[Retry]:
        return []  # NAK'd messages come back through read()

    async def due_for(self, route: str, now: float, limit: int, upto: int | None = None) -> list[Retry]:
        return []  # likewise

    async def next_due(self, routes: Sequence[str], after: float | None = None) -> float | None:
        return None

    async def waiting(self, routes: Sequence[str]) -> int:
        """Events not finished for these routes: pending in the consumer or awaiting an ack
        (a NAK'd message waiting for its redelivery counts)."""
        found = await self._io(status.pending, list(routes))
        return sum(n + a for n, a in found.values())

    async def retry_state(self, route: str, seq: int) -> Retry | None:
        return None

    async def retry_event(self, retry: Retry) -> StoredEvent | None:
        return None

    async def append(self, broker: str, events: Sequence[CloudEvent], now: float) -> AppendResult:
        result: AppendResult = await self._io(self.store._append, broker, events)
        return result

    async def append_each(
        self, requests: Sequence[tuple[str, Sequence[CloudEvent]]], now: float
    ) -> list[AppendResult | BaseException]:
        """Per broker, every request's events published at once in arrival order (one wait
        for all their PubAcks); the PubAcks' seqs split the counts back per request. A
        broker whose publish fails fails each of its requests, not those of other brokers."""
        results: list[AppendResult | BaseException] = [AppendResult(0, 0)] * len(requests)
        by_broker: dict[str, list[int]] = {}
        for i, (broker, _) in enumerate(requests):
            by_broker.setdefault(broker, []).append(i)

        async def publish(broker: str, which: list[int]) -> None:
            events = [e for i in which for e in requests[i][1]]
            try:
                done = await self.append(broker, events, now)
                if len(done.seqs) != len(events):
                    raise RuntimeError("the PubAcks do not say which events were stored")
            except Exception as exc:
                for i in which:
                    results[i] = exc
                return
            at = 0
            for i in which:
                n = len(requests[i][1])
                seqs = done.seqs[at : at + n]
                stored = sum(1 for seq in seqs if seq is not None)
                results[i] = AppendResult(stored, n - stored, seqs)
                at += n

        for broker, which in by_broker.items():  # one after the other: a new broker makes its stream
            await publish(broker, which)
        return results

    # ------------------------------------------------------------------ routes

    async def watch_routes(self, changed: Callable[[], None]) -> None:
        """Until cancelled: ``changed()`` for every revision of the routes in KV (the current
        one first), so every worker reloads a new revision as soon as it is applied."""
        from nats.errors import TimeoutError as NatsTimeout

        js = await self._connect()
        bucket = await kv.bucket(js, names.ROUTES_BUCKET, self._replicas())
        watcher = await bucket.watch(names.ROUTES_KEY)
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=3600)
                except NatsTimeout:
                    continue
                if entry is not None and entry.value:
                    changed()
        finally:
            try:
                await watcher.stop()
            except Exception:
                pass  # the connection is going too

    # ------------------------------------------------------------------ presence

    async def join(self, holder: str, now: float) -> bool:
        self.since, self.holder, self.live = now, holder, True
        await self.beat(holder, now, {})
        return True

    def _record(self, holder: str, now: float, counters: Mapping[str, int]) -> dict[str, Any]:
        self.counters = dict(counters) or self.counters
        return status.heartbeat_record(
            holder, os.getpid(), socket.gethostname(), self.since, now, self.counters, self.routes
        )

    async def beat(self, holder: str, now: float, counters: Mapping[str, int]) -> bool:
        """Always True: there is no lease to lose. A heartbeat that cannot be written now (the
        cluster electing a leader, a reconnect) is one log line; the next one tries again."""
        self.holder = holder
        try:
            await self._io(
                _beat, holder, self._record(holder, now if self.live else 0, counters), self._replicas()
            )
        except Exception as exc:
            if not self._beat_failing:
                log.warning(
                    "cannot write the heartbeat to %s now (%s); trying again", names.WORKERS_BUCKET, exc
                )
            self._beat_failing = True
            return True
        if self._beat_failing:
            log.warning("heartbeats to %s written again", names.WORKERS_BUCKET)
        self._beat_failing = False
        self._saved = time.monotonic()
        self._dirty = False
        return True

    def _replicas(self) -> int:
        return self.store.settings.replicas if self.store.settings is not None else 1

    async def _save_counters(self, force: bool = False) -> None:
        """The route counters reach KV with the heartbeat, and at most a second after a
        commit even where no heartbeat runs (an engine driven without the worker's runner).
        A commit never waits for it: the write runs beside the delivery path."""
        if not self._dirty or (not force and time.monotonic() - self._saved < SAVE_EVERY):
            return
        if force:
            if self._saving is not None:
                await asyncio.gather(self._saving, return_exceptions=True)
            await self.beat(self.holder, time.time(), self.counters)
        elif self._saving is None or self._saving.done():
            self._saved = time.monotonic()
            self._saving = asyncio.ensure_future(self.beat(self.holder, time.time(), self.counters))

    async def leave(self, holder: str) -> None:
        self.live = False
        try:
            await self._io(_leave, holder, self._record(holder, time.time(), {}), self._replicas())
            self._dirty = False
        except Exception as exc:
            log.warning("cannot mark this worker gone in %s (%s)", names.WORKERS_BUCKET, exc)
        finally:
            await self.close()

    def version(self) -> int:
        """Moves when a route has something to read: messages (or a status) arrived on a
        puller's inbox, or its pull request ran out (or was lost with a connection), so the
        route must read again to have one waiting on the server."""
        now = time.monotonic()
        for p in self.pullers.values():
            if p.expires_at and now >= p.expires_at:
                p.expires_at = 0.0
                p.outstanding = 0
                self._arrivals += 1
        return self._arrivals

    def _arrived(self) -> None:
        self._arrivals += 1
        self._arrival.set()

    async def watch(self, changed: Callable[[], None]) -> None:
        """Until cancelled: ``changed()`` whenever a route has something to read (see
        :meth:`version`). Sleeps on the pullers' inboxes, and at most until the next pull
        request runs out (a request lost with a connection sends no status)."""
        seen = self.version()
        while True:
            self._arrival.clear()
            if self.version() == seen:
                now = time.monotonic()
                ends = [p.expires_at for p in self.pullers.values() if p.expires_at]
                wait = max(0.0, min(ends) - now) if ends else consumers.PULL_EXPIRES
                try:
                    await asyncio.wait_for(self._arrival.wait(), wait + 0.01)
                except TimeoutError:
                    pass
            current = self.version()
            if current != seen:
                seen = current
                changed()

    def problem(self) -> str | None:
        """None while connected; while the client reconnects, says so (``/healthz`` 503)."""
        if self.nc is not None and not self.nc.is_connected:
            return f"not connected to NATS at {self.store.options.address} (reconnecting)"
        return None

    def configure(self, durability: str) -> None:
        pass  # durability is the stream's (file storage, replicas)

    async def housekeep(self) -> None:
        pass


async def _beat(js: Any, holder: str, record: dict[str, Any], replicas: int) -> None:
    await kv.beat(await kv.bucket(js, names.WORKERS_BUCKET, replicas, kv.WORKERS_MAX_AGE), holder, record)


async def _leave(js: Any, holder: str, record: dict[str, Any], replicas: int) -> None:
    await kv.leave(await kv.bucket(js, names.WORKERS_BUCKET, replicas, kv.WORKERS_MAX_AGE), holder, record)
