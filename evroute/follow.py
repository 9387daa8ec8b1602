"""Following delivery outcomes as they happen (``evroute tail``), as a library.

The worker writes every outcome into the ring of ``store/outcomes.py`` with its batched
cursor commit; a follower notices new commits with ``PRAGMA data_version`` (a few
microseconds, no disk read) and reads the ring after the last ``n`` it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from evroute.clock import rfc3339
from evroute.routes.model import RouteSet
from evroute.store import Store, outcomes

WAKE_EVERY = 0.02


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
    store: Store,
    filters: Filters,
    *,
    last: int = 0,
    missed: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[outcomes.Outcome]:
    """Yield outcomes newer than now (plus the ``last`` newest ones), forever or until ``stop()``.
    ``missed(k)`` is told when ``k`` outcomes left the ring before they could be read."""
    position = outcomes.last(store)
    if last > 0:
        backlog = outcomes.newest(store, last)
        if backlog:
            position = backlog[0].n - 1
    version = -1
    while not stop():
        current = store.data_version()
        if current == version:
            sleep(WAKE_EVERY)
            continue
        version = current
        while True:
            batch = outcomes.after(store, position)
            if not batch:
                break
            if batch[0].n > position + 1 and missed is not None and position > 0:
                missed(batch[0].n - position - 1)
            for o in batch:
                position = o.n
                if filters.keep(o):
                    yield o


__all__ = ["Filters", "doc", "follow"]
