"""A durable pull consumer per route, the pull loop that feeds a worker, and settling.

Consumer ``evroute-<route>`` on the broker's stream reads ``evroute.<B>`` and the route's own
replay subject. It is created when the route is first applied, so ``start: latest`` means the
events published after that moment (deliver policy ``by_start_sequence`` = the stream's next
sequence; ``earliest`` = ``all``). ``AckWait`` is the route's timeout plus a margin: a worker
that dies mid-attempt gives the event back to the others after that. ``MaxAckPending`` is the
route's concurrency, 1 when ordered: the server lets one event out at a time across every
worker, and a NAK'd head stays pending until it is redelivered, so order holds.

Settling: success = ack; a retriable failure = NAK with the 5.3 delay (the schedule lives in
the server); a dead letter = TERM after its record is stored. ``max_deliver`` stays unlimited:
evroute decides when an event is dead, from the message's delivery count.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evroute.cloudevent import CloudEvent
from evroute.delay import deliver_at, held_until
from evroute.errors import NotFound
from evroute.store.nats import names

ACK_MARGIN = 2.0  # seconds on top of the route's timeout before the server redelivers
PULL_EXPIRES = 2.0  # a pull request lingers this long on the server waiting for events


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """What a route asks of its consumer (the parts JetStream enforces)."""

    route: str
    broker: str
    timeout: float = 30.0
    concurrency: int = 32
    ordered: bool = False

    @property
    def ack_wait(self) -> float:
        return self.timeout + ACK_MARGIN

    @property
    def max_ack_pending(self) -> int:
        return 1 if self.ordered else max(1, self.concurrency)


def config(spec: ConsumerSpec, start: str, stream_last: int) -> Any:
    """The consumer's configuration; ``start`` is earliest | latest | SEQ | RFC 3339 time."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    kwargs: dict[str, Any] = {}
    if start == "earliest":
        kwargs["deliver_policy"] = DeliverPolicy.ALL
    elif start == "latest":
        kwargs["deliver_policy"] = DeliverPolicy.BY_START_SEQUENCE
        kwargs["opt_start_seq"] = stream_last + 1
    elif start.isdigit():
        kwargs["deliver_policy"] = DeliverPolicy.BY_START_SEQUENCE
        kwargs["opt_start_seq"] = max(1, int(start))
    else:
        from evroute.clock import parse_time

        moment = parse_time(start)
        if moment is None:
            from evroute.errors import InvalidInput

            raise InvalidInput(
                f"bad --to {start!r} (allowed: earliest, latest, a seq number, or an RFC 3339 time like 2026-01-02T15:04:05Z)"
            )
        import datetime as _dt

        kwargs["deliver_policy"] = DeliverPolicy.BY_START_TIME
        kwargs["opt_start_time"] = (
            _dt.datetime.fromtimestamp(moment, _dt.UTC).isoformat().replace("+00:00", "Z")
        )
    return ConsumerConfig(
        durable_name=names.consumer(spec.route),
        description=f"evroute route {spec.route}",
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_deliver=-1,
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=[names.subject(spec.broker), names.replay_subject(spec.broker, spec.route)],
        max_waiting=512,
        **kwargs,
    )


async def info(js: Any, route: str, broker: str) -> Any | None:
    from nats.js.errors import NotFoundError

    try:
        return await js.consumer_info(names.stream(broker), names.consumer(route))
    except NotFoundError:
        return None


async def ensure(js: Any, spec: ConsumerSpec, start: str) -> bool:
    """Create the route's consumer if it is new (True), else bring AckWait/MaxAckPending up to date."""
    existing = await info(js, spec.route, spec.broker)
    if existing is None:
        from evroute.store.nats.streams import last_seq

        await js.add_consumer(names.stream(spec.broker), config(spec, start, await last_seq(js, spec.broker)))
        return True
    cfg = existing.config
    if cfg.ack_wait != spec.ack_wait or cfg.max_ack_pending != spec.max_ack_pending:
        cfg.ack_wait = spec.ack_wait
        cfg.max_ack_pending = spec.max_ack_pending
        await js.add_consumer(names.stream(spec.broker), cfg)  # same name: an update
    return False


async def recreate(js: Any, spec: ConsumerSpec, to: str) -> int:
    """``subscribe reset --to``: the consumer is deleted and made again at that point.

    Returns the new position (every event with a lower-or-equal stream sequence is skipped).
    """
    from nats.js.errors import NotFoundError

    from evroute.store.nats.streams import last_seq

    last = await last_seq(js, spec.broker)
    cfg = config(spec, to, last)
    try:
        await js.delete_consumer(names.stream(spec.broker), names.consumer(spec.route))
    except NotFoundError:
        raise NotFound(f"route '{spec.route}' has no consumer yet (is it in the routes file?)")
    created = await js.add_consumer(names.stream(spec.broker), cfg)
    if to == "earliest":
        return 0
    if cfg.opt_start_seq is not None:
        return int(cfg.opt_start_seq) - 1
    return max(int(created.delivered.stream_seq), 0)


async def delete(js: Any, route: str, broker: str) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.delete_consumer(names.stream(broker), names.consumer(route))
    except NotFoundError:
        pass


class Puller:
    """Pulls a route's messages for one worker: one pull request out at a time, batch = free slots.

    Messages arrive on a private inbox while the request lingers on the server (up to
    ``PULL_EXPIRES``); :meth:`next` hands over what has arrived as soon as there is anything.
    """

    def __init__(self, nc: Any, route: str, broker: str, arrived: Callable[[], None] | None = None) -> None:
        self.nc = nc
        self.arrived = arrived
        self.route = route
        self.broker = broker
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{names.stream(broker)}.{names.consumer(route)}"
        self.inbox = nc.new_inbox()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sub: Any = None
        self.outstanding = 0  # messages the open request may still bring
        self.expires_at = 0.0
        self.missing = False  # the consumer does not exist (removed, or being recreated)

    async def start(self) -> None:
        async def on_msg(msg: Any) -> None:
            self.queue.put_nowait(msg)
            if self.arrived is not None:
                self.arrived()

        self.sub = await self.nc.subscribe(self.inbox, cb=on_msg)

    async def stop(self) -> None:
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:
                pass
            self.sub = None

    async def _request(self, batch: int) -> None:
        now = time.monotonic()
        if self.outstanding > 0 and now < self.expires_at:
            return
        req = {"batch": batch, "expires": int(PULL_EXPIRES * 1e9)}
        await self.nc.publish(self.api, json.dumps(req).encode(), reply=self.inbox)
        self.outstanding = batch
        self.expires_at = now + PULL_EXPIRES + 0.5

    async def next(self, limit: int, wait: float) -> list[Any]:
        """Up to ``limit`` messages; waits up to ``wait`` seconds for the first one."""
        if limit <= 0:
            return []
        out: list[Any] = []
        self._drain(out, limit)
        if out:
            return out
        await self._request(limit)
        deadline = time.monotonic() + wait
        while not out:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            self._take(msg, out)
            self._drain(out, limit)
            if not out and self.outstanding == 0:
                await self._request(limit)
        return out

    def _drain(self, out: list[Any], limit: int) -> None:
        while len(out) < limit and not self.queue.empty():
            self._take(self.queue.get_nowait(), out)

    def _take(self, msg: Any, out: list[Any]) -> None:
        status = (msg.headers or {}).get("Status") if msg.headers else None
        if status is None and not msg.reply:
            status = "?"
        if status:
            # 408 request expired, 409 consumer deleted / limits, 404 no messages, 100 heartbeat
            if status != "100":
                self.outstanding = 0
            self.missing = status == "409" and "Consumer Deleted" in (msg.headers or {}).get(
                "Description", ""
            )
            return
        self.missing = False
        self.outstanding = max(0, self.outstanding - 1)
        out.append(msg)


def attempt(msg: Any, held: bool = False) -> int:
    """The attempt this delivery of ``msg`` is: its delivery count, less the first delivery
    when that one was spent on holding a delayed event (``held``, see :func:`spent_on_hold`)."""
    count = int(msg.metadata.num_delivered)
    return count - 1 if held else count


def spent_on_hold(event: CloudEvent, published: float) -> bool:
    """Whether the first delivery of ``event`` (published at ``published``, the server's
    clock) is the hold of a delayed event rather than an attempt.

    The rule is fixed by the message alone, so every worker counts the same: an event whose
    ``evroutedeliverat`` is after its publish time always spends its first delivery on the
    hold. A worker that reads it before its time holds it (a NAK with the remaining delay);
    one that reads it first only after its time (no worker ran meanwhile) NAKs it at once
    (:func:`spend_first_delivery`), so the count moves the same way in both cases.
    """
    due = deliver_at(event)
    return due is not None and due > published


def spend_first_delivery(msg: Any, event: CloudEvent, now: float) -> bool:
    """True when this is the first delivery of an event whose hold is over before any
    worker held it: the caller NAKs it for an immediate redelivery instead of attempting it."""
    return int(msg.metadata.num_delivered) == 1 and held_until(event, now) is None


def stream_seq(msg: Any) -> int:
    return int(msg.metadata.sequence.stream)


# A message is settled once; settling it again (a stale handle after a reset) changes nothing.


async def ack(msg: Any) -> None:
    if not msg.is_acked:
        await msg.ack()


async def nak(msg: Any, delay: float) -> None:
    if not msg.is_acked:
        await msg.nak(delay=max(0.0, delay))


async def term(msg: Any) -> None:
    if not msg.is_acked:
        await msg.term()
