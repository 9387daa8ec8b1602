"""Retention: delete events that every route has finished with, once older than ``settings.retention``.

An event row goes when all of these hold:

- it was published more than ``retention`` ago;
- every route of the *current* routes file on its broker has passed it (``seq <= cursor``).
  A paused route holds its backlog. A route whose cursor does not exist yet holds everything
  if it starts ``earliest`` and nothing if it starts ``latest`` (it will begin at the end);
- no retry row names its seq (a retry reads its event from the log).

Cursors of routes no longer in the routes file hold nothing back: the cursor is kept so that
re-adding the name resumes, and it then resumes from the oldest event still stored. A broker
no route reads keeps its events for ``retention`` only. Dead letters keep their own copy of the
event, so ``dlq show`` and ``dlq replay`` work after the log row is gone.

The store does the deleting (SQLite: :mod:`evroute.store.sweep`, in short chunks; a JetStream
stream ages events out by itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evroute.routes.model import RouteSet
from evroute.store import Store
from evroute.store.sweep import CHUNK

if TYPE_CHECKING:
    from evroute.store.base import EventStore

# The worker runs a pass every minute inside its event loop; this bounds one pass there.
WORKER_LIMIT = 50_000


def collect(
    store: EventStore | Store,
    routeset: RouteSet,
    now: float,
    limit: int | None = WORKER_LIMIT,
    chunk: int = CHUNK,
) -> int:
    """Delete what retention allows (at most ``limit`` rows; None = all); returns how many.

    ``store`` is a store behind the seam, or a SQLite connection itself (whose deletion
    chunks ``chunk`` sizes)."""
    from evroute.store.base import RouteStart

    retention = routeset.settings.retention
    if retention is None:
        return 0
    starts = [RouteStart(r.name, r.broker, r.start) for r in routeset.routes]
    if isinstance(store, Store):
        from evroute.store import sweep

        return sweep.collect(store, starts, now - retention, limit, chunk)
    return store.collect(starts, retention, now, limit)


__all__ = ["CHUNK", "WORKER_LIMIT", "collect"]
