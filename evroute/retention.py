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

The store carries it out: a SQLite file deletes in chunks of ``chunk`` rows, each its own short
write transaction, so a publisher or the worker waits for the write lock at most one chunk, and
each chunk re-reads the cursors inside its transaction (a ``subscribe reset --to earliest``
between two chunks stops the deletion right there; :mod:`evroute.store.sweep`). A JetStream
stream ages events out by itself (its max age).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evroute.routes.model import RouteSet
from evroute.store.base import starts

CHUNK = 1000
# The worker runs a pass every minute; this bounds one pass.
WORKER_LIMIT = 50_000


def collect(
    store: Any,
    routeset: RouteSet,
    now: float,
    limit: int | None = WORKER_LIMIT,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete what retention allows (at most ``limit`` rows; None = all); returns how many.
    ``progress(n)`` is told after every chunk how many rows that chunk deleted.

    ``store`` is a store behind the seam, or a SQLite :class:`~evroute.store.Store` itself."""
    retention = routeset.settings.retention
    if retention is None:
        return 0
    routes = starts(routeset.routes)
    if not hasattr(store, "collect"):  # a SQLite connection itself (tests, tools)
        from evroute.store.sqlite import SqliteStore

        store = SqliteStore.over(store)
    return int(store.collect(routes, retention, now, limit, chunk=chunk, progress=progress))


__all__ = ["CHUNK", "WORKER_LIMIT", "collect"]
