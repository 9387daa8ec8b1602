"""Knative PingSource at run time: when a source fires, and the event it sends.

A PingSource fires on its cron ``schedule`` (5 fields, or a descriptor such as ``@hourly``;
evroute also takes a 6th field for seconds, as croniter reads it) in its ``timezone`` (UTC
when unset). Each tick makes one event with Knative's attributes: type
``dev.knative.sources.ping``, source ``/apis/v1/namespaces/<ns>/pingsources/<name>``, ``time``
the tick. The id is derived from the source and the tick, so the same tick published twice
(a restart inside the minute, two workers on one cluster) is stored once: the broker's
dedup on (source, id) does the rest.

Ticks missed while no worker ran are not made up, as in Knative: :class:`Ticker` starts from
the first tick after it starts, and after a long stall fires the latest tick once.

croniter is imported here only, and this module only when a routes file holds a PingSource.
"""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from evroute.clock import rfc3339
from evroute.cloudevent import CloudEvent, make_event
from evroute.errors import InvalidInput
from evroute.routes.model import PingSource

logger = logging.getLogger("evroute.sources")

EVENT_TYPE = "dev.knative.sources.ping"
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_schedule(schedule: str) -> str | None:
    """None when ``schedule`` is a schedule evroute runs, else what is wrong."""
    from croniter import croniter

    text = schedule.strip()
    if text.startswith("@"):
        return None if text in DESCRIPTORS else f"unknown descriptor (allowed: {', '.join(DESCRIPTORS)})"
    fields = text.split()
    if len(fields) not in (5, 6):
        return f"a cron schedule has 5 fields (minute hour day month weekday), got {len(fields)}"
    if not croniter.is_valid(text):
        return "not a valid cron schedule"
    return None


def check_timezone(name: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown time zone (allowed: an IANA name such as Europe/Berlin or UTC)"
    return None


def _zone(source: PingSource) -> _dt.tzinfo:
    if not source.timezone:
        return _dt.UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(source.timezone)


def next_tick(source: PingSource, after: float) -> float:
    """The first tick of ``source`` strictly after ``after`` (Unix seconds)."""
    from croniter import croniter

    start = _dt.datetime.fromtimestamp(after, _zone(source))
    it = croniter(source.schedule.strip(), start)
    moment: _dt.datetime = it.get_next(_dt.datetime)
    return moment.timestamp()


def latest_tick(source: PingSource, at: float) -> float:
    """The last tick of ``source`` at or before ``at``."""
    from croniter import croniter

    start = _dt.datetime.fromtimestamp(at, _zone(source))
    it = croniter(source.schedule.strip(), start)
    if next_tick(source, at - 1e-6) == at:
        return at
    moment: _dt.datetime = it.get_prev(_dt.datetime)
    return moment.timestamp()


def tick_id(source: PingSource, tick: float) -> str:
    """The event id of one tick: the same for every worker and every restart."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source.source}@{rfc3339(tick)}"))


def tick_event(source: PingSource, tick: float) -> CloudEvent:
    """The event ``source`` sends at ``tick``, with Knative's attributes."""
    content_type = source.content_type if source.data is not None else None
    return make_event(
        type=EVENT_TYPE,
        source=source.source,
        id=tick_id(source, tick),
        time=rfc3339(tick),
        data=source.data,
        datacontenttype=content_type,
        extensions=dict(source.extensions) or None,
    )


def target_broker(source: PingSource) -> str:
    """The broker a tick is published into: the sink Broker, or the source's own (a uri sink is
    delivered by the route the loader made for it)."""
    return source.broker if source.broker is not None else own_broker(source.name)


def own_broker(name: str) -> str:
    return f"pingsource-{name}"


Publish = Callable[[str, Sequence[CloudEvent]], Any]


class Ticker:
    """Fires every source at its ticks. Step it with :meth:`step` (tests drive the clock);
    the worker's loop sleeps until :meth:`step` says, or until the sources change."""

    def __init__(self, sources: Iterable[PingSource], now: float) -> None:
        self.due: dict[str, float] = {}
        self.sources: dict[str, PingSource] = {}
        self.fired: list[tuple[str, float]] = []  # (source, tick) fired, newest last (for logs/tests)
        self.configure(sources, now)

    def configure(self, sources: Iterable[PingSource], now: float) -> None:
        """New or changed sources start from their next tick; unchanged ones keep theirs."""
        wanted = {s.name: s for s in sources}
        due: dict[str, float] = {}
        for name, s in wanted.items():
            same = self.sources.get(name) == s and name in self.due
            due[name] = self.due[name] if same else next_tick(s, now)
        self.sources, self.due = wanted, due

    def step(self, now: float, publish: Publish) -> float | None:
        """Publish every tick that has come (one per source, the latest: missed ones are not
        made up); return seconds until the next, None when there are no sources."""
        for name, s in self.sources.items():
            if self.due[name] > now:
                continue
            tick = latest_tick(s, now)
            try:
                publish(target_broker(s), [tick_event(s, tick)])
            except InvalidInput as exc:  # too large for maxEventBytes, for one: say so, go on
                logger.error("pingsource %s: tick %s not published: %s", name, rfc3339(tick), exc)
            self.fired.append((name, tick))
            del self.fired[:-100]
            self.due[name] = next_tick(s, now)
        if not self.due:
            return None
        return max(0.0, min(self.due.values()) - now)

    def upcoming(self) -> dict[str, float]:
        return dict(self.due)


def _collect(into: list[tuple[str, Sequence[CloudEvent]]]) -> Publish:
    def publish(broker: str, events: Sequence[CloudEvent]) -> None:
        into.append((broker, events))

    return publish


class PingLoop:
    """The worker's loop over a :class:`Ticker`: it sleeps until the next tick (a timer for the
    one known due time, no polling) or until the sources change, then publishes what is due.
    ``clock`` is the worker's clock; ``publish`` stores events in a broker and wakes its routes."""

    def __init__(
        self,
        sources: Iterable[PingSource],
        clock: Callable[[], float],
        publish: Callable[[str, Sequence[CloudEvent]], Awaitable[Any]],
    ) -> None:
        import asyncio

        self.clock = clock
        self.publish = publish
        self.ticker = Ticker(sources, clock())
        self.wake = asyncio.Event()
        self.stopped = False

    def configure(self, sources: Iterable[PingSource]) -> None:
        self.ticker.configure(sources, self.clock())
        self.wake.set()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    async def run(self) -> None:
        import asyncio

        while not self.stopped:
            due: list[tuple[str, Sequence[CloudEvent]]] = []
            wait = self.ticker.step(self.clock(), _collect(due))
            for broker, events in due:
                try:
                    await self.publish(broker, events)
                except InvalidInput as exc:  # too large for maxEventBytes: say so, go on
                    logger.error("pingsource tick into %s not published: %s", broker, exc)
            self.wake.clear()
            if self.stopped:
                return
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass


__all__ = [
    "EVENT_TYPE",
    "PingLoop",
    "Ticker",
    "check_schedule",
    "check_timezone",
    "latest_tick",
    "next_tick",
    "own_broker",
    "target_broker",
    "tick_event",
    "tick_id",
]
