"""The ingress's shared commits: the events of requests that arrive together, stored at once.

Under load many handlers finish parsing in the same turn of the event loop; each queues its
events and waits, and one task scheduled for the end of that turn hands them all to the store
(``Deliveries.append_each``): on SQLite one transaction for every request of the turn, on
JetStream every request published at once. A commit costs far more than an insert, so sharing
it is most of the ingress's throughput; each request is still stored entirely or not at all,
and gets its own stored/duplicate counts.

Once the events are stored the dispatchers of their brokers are woken *before* the requests'
202 answers are written: the delivery of a new event starts one turn of the loop earlier
than the producer's answer (which waits no longer than a turn for it). Nothing is answered,
and no dispatcher woken, before the store has the events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from evroute.cloudevent import CloudEvent
from evroute.store import Store
from evroute.store.base import Deliveries
from evroute.store.records import AppendResult
from evroute.worker.metrics import Metrics

logger = logging.getLogger("evroute.ingress")

_Pending = tuple[str, Sequence[CloudEvent], asyncio.Future[tuple[int, int]]]


class GroupCommit:
    """Queue each request's events with :meth:`submit`; they are stored at the end of the
    loop's turn together with every other request queued meanwhile."""

    def __init__(self, store: Deliveries | Store, metrics: Metrics, on_stored: Callable[[str], None]) -> None:
        self.store = deliveries(store)
        self.metrics = metrics
        self.on_stored = on_stored
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, broker: str, events: Sequence[CloudEvent]) -> asyncio.Future[tuple[int, int]]:
        """Queue one request's events; the future gives (stored, duplicates) once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._pending.append((broker, events, future))
        if not self._scheduled:
            self._scheduled = True
            task = loop.create_task(self.flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def flush(self) -> None:
        self._scheduled = False
        pending = [p for p in self._pending if not p[2].done()]  # a cancelled request stores nothing
        self._pending = []
        if not pending:
            return
        results: Sequence[AppendResult | BaseException]
        try:
            results = await self.store.append_each(
                [(broker, events) for broker, events, _ in pending], time.time()
            )
        except Exception as exc:  # one transaction: every request fails, none was stored
            results = [exc] * len(pending)
        try:
            stored_in: dict[str, int] = {}
            for (broker, _, _), result in zip(pending, results, strict=True):
                if isinstance(result, AppendResult) and result.stored:
                    stored_in[broker] = stored_in.get(broker, 0) + result.stored
            for broker, n in stored_in.items():
                self.metrics.published(broker, n)
                try:
                    self.on_stored(broker)
                except Exception:  # the events are durable; a wake-up hiccup must not turn that into an error
                    logger.exception("ingress: waking the dispatchers of broker %s failed", broker)
            if stored_in:
                await asyncio.sleep(0)  # the woken dispatchers start their deliveries first
        finally:
            _answer(pending, results)


def _answer(pending: list[_Pending], results: Sequence[AppendResult | BaseException]) -> None:
    for (_, _, future), result in zip(pending, results, strict=True):
        if future.done():  # the client went away meanwhile: its events are stored regardless
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result((result.stored, result.duplicates))


def deliveries(store: Deliveries | Store) -> Deliveries:
    """The store seam's worker side; a SQLite connection itself is taken as the SQLite store."""
    if isinstance(store, Store):
        from evroute.store.sqlite import SqliteStore

        return SqliteStore.over(store).deliveries()
    return store


__all__ = ["GroupCommit", "deliveries"]
