"""Following delivery outcomes as they happen (``evroute tail``), as a library.

The worker writes every outcome with its batched commit into the store's ring (SQLite: the
table of ``store/outcomes.py``; JetStream: stream ``EVROUTE_OUTCOMES``); a follower reads it
through the store seam: it notices new writes with ``store.changed()`` (SQLite's
``PRAGMA data_version``: a few microseconds, no disk read) and reads the ring after the last
``n`` it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from evroute.clock import rfc3339
from evroute.routes.model import RouteSet
from evroute.store import outcomes

WAKE_EVERY = 0.02
WAKE_EVERY_REMOTE = 0.1  # a look at a server costs a round trip


@dataclass(frozen=True, slots=True)
class Filters:
    route: str | None = None
    broker: str | None = None
    type: str | None = None
    failed: bool = False

    def keep(self, o: outcomes.Outcome) -> bool:
        if self.route is not None and o.route != self.route:
            return False
        if self.broker is not None and o.broker != self.broker:
            return False
        if self.type is not None and o.type != self.type:
            return False
        return not (self.failed and o.outcome == "delivered")


def doc(o: outcomes.Outcome, routeset: RouteSet) -> dict[str, Any]:
    """One outcome in the ``tail --json`` shape of SPEC 16."""
    route = routeset.by_name().get(o.route)
    return {
        "at": rfc3339(o.at),
        "route": o.route,
        "broker": o.broker,
        "seq": o.seq,
        "id": o.id,
        "type": o.type,
        "attempt": o.attempt,
        "outcome": o.outcome,
        "status": o.status,
        "latency_ms": o.latency_ms,
        "endpoint": None if route is None else route.mask(route.subscriber.describe()),
    }


def follow(
    store: Any,
    filters: Filters,
    *,
    last: int = 0,
    missed: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[outcomes.Outcome]:
    """Yield outcomes newer than now (plus the ``last`` newest ones), forever or until ``stop()``.
    ``store`` is an EventStore (store/base.py). ``missed(k)`` is told when ``k`` outcomes left
    the ring before they could be read."""
    position = store.last_outcome()
    if last > 0:
        backlog = store.recent_outcomes(max(0, position - last), last)
        if backlog:
            position = backlog[0].n - 1
    wake = WAKE_EVERY if store.kind == "sqlite" else WAKE_EVERY_REMOTE
    version = -1
    while not stop():
        current = store.changed()
        if current == version:
            sleep(wake)
            continue
        version = current
        while True:
            batch = store.recent_outcomes(position)
            if not batch:
                break
            if batch[0].n > position + 1 and missed is not None and position > 0:
                missed(batch[0].n - position - 1)
            for o in batch:
                position = o.n
                if filters.keep(o):
                    yield o


__all__ = ["Filters", "doc", "follow"]
