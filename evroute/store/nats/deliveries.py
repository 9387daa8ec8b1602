""":class:`NatsDeliveries`: the seam's worker half on JetStream.

One connection per worker, on the worker's own loop, reconnecting forever (one log line per
loss and per recovery). Each route gets a :class:`~evroute.store.nats.consumers.Puller` on its
durable consumer; every worker pulls from every route, and the server spreads the messages.

- ``read`` returns what the consumer hands this worker, redeliveries included, each with its
  delivery count as the attempt; ``after`` is not needed (the consumer knows its position).
- ``succeeded`` acks; ``retry`` NAKs with the delay to ``due_at``; ``dead_letter`` stores the
  record (waiting for its PubAck) and then terminates the message.
- A replayed dead letter comes back through ``read`` on the route's replay subject; its
  success removes the record, its new dead letter replaces the old one.
- ``commit`` keeps the counters for the heartbeat; no position is written (acks are the
  position).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from evroute.cloudevent import CloudEvent, make_event
from evroute.store.base import Cursor, NewDeadLetter, Progress, Retry, RouteStart
from evroute.store.nats import connection, consumers, deadletters, kv, names, status, streams
from evroute.store.nats.consumers import Puller
from evroute.store.records import AppendResult, StoredEvent

log = logging.getLogger("evroute.store.nats")

READ_WAIT = 0.25  # how long one read waits on the server for a first message (a long poll)
EPOCH_CHECK = 1.0  # seconds between looks at the consumers' creation times


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
        self._reads = 0
        self._workers: Any = None

    async def _connect(self) -> Any:
        if self.js is None:
            self.nc = await connection.connect(self.store.options, name="evroute worker", keep_trying=True)
            self.js = self.nc.jetstream()
        return self.js

    async def close(self) -> None:
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
        await deadletters.ensure_stream(js, (await self.store._settings(js)).replicas)
        wanted = {r.name: r.broker for r in routes}
        for name in list(self.pullers):
            if wanted.get(name) != self.pullers[name].broker:
                await self.pullers.pop(name).stop()
        for name, broker in wanted.items():
            if name not in self.pullers:
                p = Puller(self.nc, name, broker)
                await p.start()
                self.pullers[name] = p
        found = await status.cursors(js)
        self._epochs = {r: c.epoch for r, c in found.items()}
        self._epochs_at = time.monotonic()
        return {name: found[name] for name in wanted if name in found}

    async def cursor(self, route: str) -> Cursor | None:
        return (await status.cursors(await self._connect())).get(route)

    async def epochs(self) -> dict[str, int]:
        if time.monotonic() - self._epochs_at >= EPOCH_CHECK:
            found = await status.route_consumers(await self._connect())
            self._epochs = {route: status.epoch_of(info) for route, _, info in found}
            self._epochs_at = time.monotonic()
        return dict(self._epochs)

    async def commit(self, progress: Sequence[Progress], now: float) -> list[str]:
        for p in progress:
            r = self.routes.setdefault(p.route, {"delivered": 0, "failed": 0, "last_error": None})
            r["delivered"] += p.delivered
            r["failed"] += p.failed
            if p.last_error is not None:
                r["last_error"], r["last_error_at"] = p.last_error, p.last_error_at
            r["in_flight"], r["breaker"] = p.in_flight, p.breaker
        before = dict(self._epochs)
        after = await self.epochs()
        return [route for route, epoch in after.items() if route in before and before[route] != epoch]

    async def lag(self, broker: str, position: int) -> int:
        return max(0, await streams.last_seq(await self._connect(), broker) - position)

    # ------------------------------------------------------------------ reading and settling

    async def read(self, route: str, broker: str, after: int, limit: int) -> Sequence[StoredEvent]:
        puller = self.pullers.get(route)
        if puller is None:
            return []
        self._reads += 1
        out = []
        for msg in await puller.next(limit, self.read_wait):
            meta = msg.metadata
            stamp = meta.timestamp
            published = stamp.timestamp() if isinstance(stamp, _dt.datetime) else float(stamp or time.time())
            got = streams.stored(broker, int(meta.sequence.stream), published, msg.data or b"", msg.headers)
            if got is None:
                await self._not_an_event(route, broker, msg, published)
                continue
            out.append(
                StoredEvent(got.seq, broker, published, got.event, attempt=consumers.attempt(msg), token=msg)
            )
        return out

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
        self, route: str, seq: int, token: Any, *, scheduled: bool, dlq_id: int | None
    ) -> None:
        await consumers.ack(token)
        replayed = deadletters.replayed_from(token) if token is not None else None
        if replayed is not None:
            await deadletters.delete(await self._connect(), replayed, route)

    async def retry(self, retry: Retry, token: Any) -> None:
        await consumers.nak(token, retry.due_at - time.time())

    async def dead_letter(self, letter: NewDeadLetter, token: Any, replaced: int | None) -> int:
        js = await self._connect()
        dlq_id = await deadletters.add(js, letter)
        if token is not None:
            await consumers.term(token)
            replaced = replaced if replaced is not None else deadletters.replayed_from(token)
        if replaced is not None:
            await deadletters.delete(js, replaced, letter.route)
        return dlq_id

    async def dls_outcome(self, dlq_id: int, outcome: str) -> None:
        js = await self._connect()
        letter = await deadletters.find(js, dlq_id)
        if letter is not None:
            await deadletters.annotate(js, dlq_id, letter.route, dls_outcome=outcome)

    # ------------------------------------------------------------------ schedules the server keeps

    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[Retry]:
        return []  # NAK'd messages come back through read()

    async def next_due(self, routes: Sequence[str]) -> float | None:
        return None

    async def waiting(self, routes: Sequence[str]) -> int:
        """Events not finished for these routes: pending in the consumer or awaiting an ack
        (a NAK'd message waiting for its redelivery counts)."""
        found = await status.pending(await self._connect(), list(routes))
        return sum(n + a for n, a in found.values())

    async def retry_state(self, route: str, seq: int) -> Retry | None:
        return None

    async def retry_event(self, retry: Retry) -> StoredEvent | None:
        return None

    async def append(self, broker: str, events: Sequence[CloudEvent], now: float) -> AppendResult:
        js = await self._connect()
        result: AppendResult = await self.store._append(js, broker, events)
        return result

    # ------------------------------------------------------------------ presence

    async def join(self, holder: str, now: float) -> bool:
        self.since = now
        await self.beat(holder, now, {})
        return True

    async def _bucket(self) -> Any:
        if self._workers is None:
            self._workers = await kv.bucket(
                await self._connect(), names.WORKERS_BUCKET, 1, kv.WORKERS_MAX_AGE
            )
        return self._workers

    def _record(self, holder: str, now: float, counters: Mapping[str, int]) -> dict[str, Any]:
        return status.heartbeat_record(
            holder, os.getpid(), socket.gethostname(), self.since, now, counters, self.routes
        )

    async def beat(self, holder: str, now: float, counters: Mapping[str, int]) -> bool:
        await kv.beat(await self._bucket(), holder, self._record(holder, now, counters))
        return True

    async def leave(self, holder: str) -> None:
        try:
            await kv.leave(await self._bucket(), holder, self._record(holder, time.time(), {}))
        finally:
            await self.close()

    def version(self) -> int:
        """Always moves: a JetStream read is a long poll on the server, so the worker should
        always read rather than wait for a local signal."""
        self._reads += 1
        return self._reads

    def configure(self, durability: str) -> None:
        pass  # durability is the stream's (file storage, replicas)

    async def housekeep(self) -> None:
        pass
