""":class:`NatsStore`: the seam's command half (synchronous) over a JetStream cluster.

Commands call it like the SQLite store; each call runs on a private event loop (see
:class:`~evroute.store.nats.connection.LoopThread`) over one connection made on first use.
The worker's half is :class:`~evroute.store.nats.deliveries.NatsDeliveries`, on the worker's
own loop and connection.

What differs from SQLite, and why:

- ``seq`` is a stream sequence, so it is per broker: ``events show SEQ`` looks in every
  broker's stream and shows the first it finds (``default`` first).
- A route's position is its consumer's ack floor; ``epoch`` is the consumer's creation time
  (a reset recreates the consumer, so the epoch moves).
- Retries are NAKs held by the server: there is no per-event retry row to show, so
  ``retry_state`` is None and the retry summary counts the messages being redelivered.
- ``gc`` has nothing to do: the stream's max age (``settings.retention``) drops old events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from evroute.cloudevent import CloudEvent
from evroute.errors import StoreError
from evroute.store.base import Cursor, DeadLetter, Presence, Retry, RoutesDoc, RouteStart
from evroute.store.nats import connection, consumers, deadletters, kv, names, streams
from evroute.store.nats.consumers import ConsumerSpec
from evroute.store.nats.streams import StreamSettings
from evroute.store.records import AppendResult, StoredEvent

if TYPE_CHECKING:
    from evroute.store.base import Deliveries, EventStore
    from evroute.store.nats.deliveries import NatsDeliveries


class NatsStore:
    kind = "nats"
    exclusive = False  # no lease: every worker pulls from every route's consumer

    def __init__(self, options: connection.NatsOptions, url: str | None = None) -> None:
        self.options = options
        self.url = url or options.address
        self._loop: connection.LoopThread | None = None
        self._nc: Any = None
        self._js: Any = None
        self.settings: StreamSettings | None = None  # None: read settings.nats from the routes in KV
        self.specs: dict[str, ConsumerSpec] = {}  # routes whose delivery policy is known
        self._outcome_events: dict[tuple[str, int], Any] = {}  # (broker, seq) -> (id, type)

    # ------------------------------------------------------------------ plumbing

    def _run(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._submit(coro_fn, *args, **kwargs).result(60.0)

    def _submit(self, coro_fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """``coro_fn(js, *args)`` on the store's own loop and connection."""
        if self._loop is None:
            self._loop = connection.LoopThread()
        return asyncio.run_coroutine_threadsafe(self._call(coro_fn, *args, **kwargs), self._loop.loop)

    async def _call(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        from nats.errors import Error as NatsError

        if self._js is None:
            self._nc = await connection.connect(self.options, name="evroute")
            self._js = self._nc.jetstream()
        try:
            return await coro_fn(self._js, *args, **kwargs)
        except (NatsError, TimeoutError) as exc:
            # one error path: a server that does not answer now is a run-time fault, one line
            raise StoreError(f"NATS at {self.options.address} did not answer: {connection.reason(exc)}")

    def close(self) -> None:
        if self._loop is not None:
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    self._loop.run(self._nc.close(), timeout=5)
            self._loop.close()
        self._loop = self._nc = self._js = None

    def __enter__(self) -> NatsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ settings and routes

    def use_routes(self, routes: Iterable[Any], settings: Any | None = None) -> None:
        """Tell the store the routes' delivery policies (AckWait, MaxAckPending) and the stream
        settings, when the caller has them parsed already."""
        self.specs.update({r.name: spec_of(r) for r in routes})
        if settings is not None:
            self.settings = stream_settings(settings)

    async def _settings(self, js: Any) -> StreamSettings:
        if self.settings is None:
            await self._learn(js)
        return self.settings or StreamSettings()

    async def _learn(self, js: Any) -> None:
        """The routes in KV give the delivery policies and ``settings.nats`` (structure only)."""
        found = await kv.get_routes(await kv.bucket(js, names.ROUTES_BUCKET, None))
        if found is None:
            return
        parsed = parse_routes(found[0])
        if parsed is not None:
            self.specs.update({r.name: spec_of(r) for r in parsed.routes if r.name not in self.specs})
            if self.settings is None:
                self.settings = stream_settings(parsed.settings)

    def spec(self, route: str, broker: str) -> ConsumerSpec:
        known = self.specs.get(route)
        if known is not None and known.broker == broker:
            return known
        return ConsumerSpec(route, broker)

    # ------------------------------------------------------------------ the log

    def append(self, broker: str, events: Sequence[CloudEvent], now: float | None = None) -> AppendResult:
        result: AppendResult = self._run(self._append, broker, events)
        return result

    async def _append(self, js: Any, broker: str, events: Sequence[CloudEvent]) -> AppendResult:
        from nats.js.errors import NoStreamResponseError

        try:
            return await streams.append(js, broker, events)
        except NoStreamResponseError:
            # the first event of a broker: make its stream, then publish (dedup makes this safe)
            await streams.ensure_stream(js, broker, await self._settings(js))
            return await streams.append(js, broker, events)

    def append_all(
        self, broker: str, chunks: Iterable[Sequence[CloudEvent]], now: float | None = None
    ) -> AppendResult:
        """Validation happens while the chunks are read: all of it before anything is published,
        so an invalid line stores nothing. After that a stream has no transaction (see
        :func:`~evroute.store.nats.streams.append` for how a partial failure is reported)."""
        events = [e for chunk in chunks for e in chunk]
        if not events:
            return AppendResult(0, 0)
        return self.append(broker, events, now)

    def _brokers(self) -> list[str]:
        found: list[str] = self._run(streams.brokers)
        return sorted(found, key=lambda b: (b != "default", b))

    def event(self, seq: int) -> StoredEvent | None:
        for broker in self._brokers():
            found: StoredEvent | None = self._run(streams.scan_one, broker, seq)
            if found is not None:
                return found
        return None

    def find(self, event_id: str, broker: str | None = None) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for b in [broker] if broker else self._brokers():
            out += self._run(streams.scan, b, False, None, lambda e: e.event.id == event_id)
        return out

    def events(
        self, broker: str | None = None, type: str | None = None, limit: int = 20
    ) -> list[StoredEvent]:
        def want(e: StoredEvent) -> bool:
            return type is None or e.event.type == type

        out: list[StoredEvent] = []
        for b in [broker] if broker else self._brokers():
            out += self._run(streams.scan, b, True, limit, want)
        out.sort(key=lambda e: (e.published_at, e.seq), reverse=True)
        return list(reversed(out[:limit]))

    def lag(self, broker: str, position: int) -> int:
        return max(0, int(self._run(streams.last_seq, broker)) - position)

    # ------------------------------------------------------------------ positions

    def ensure_routes(self, routes: Sequence[RouteStart], now: float | None = None) -> list[str]:
        created: list[str] = self._run(self._ensure, routes)
        return created

    async def _ensure(self, js: Any, routes: Sequence[RouteStart]) -> list[str]:
        if any(r.name not in self.specs for r in routes):
            await self._learn(js)
        settings = await self._settings(js)
        created = []
        for broker in sorted({r.broker for r in routes}):
            await streams.ensure_stream(js, broker, settings)
        from evroute.store.nats.status import route_consumers

        wanted = {r.name: r.broker for r in routes}
        for route, broker, _ in await route_consumers(js):
            if route in wanted and wanted[route] != broker:
                await consumers.delete(js, route, broker)  # moved to another broker: starts afresh there
        for r in routes:
            if await consumers.ensure(js, self.spec(r.name, r.broker), r.start):
                created.append(r.name)
        return created

    def _consumer(self, route: str) -> tuple[str, Any] | None:
        async def look(js: Any) -> tuple[str, Any] | None:
            for broker in await streams.brokers(js):
                info = await consumers.info(js, route, broker)
                if info is not None:
                    return broker, info
            return None

        found: tuple[str, Any] | None = self._run(look)
        return found

    def cursor(self, route: str) -> Cursor | None:
        return self.cursors().get(route)

    def cursors(self) -> dict[str, Cursor]:
        from evroute.store.nats.status import cursors

        found: dict[str, Cursor] = self._run(cursors)
        return found

    def reset(self, route: str, to: str, now: float | None = None, *, drop_retries: bool = False) -> int:
        """The consumer is recreated at ``to``. Its retries are the consumer's own (NAK'd
        messages), so they cannot outlive it: with retries waiting, a reset needs
        ``drop_retries`` (refused otherwise, nothing changed)."""
        from evroute.errors import InvalidInput, NotFound

        found = self._consumer(route)
        if found is None:
            raise NotFound(f"route '{route}' has no consumer yet (is it in the routes file?)")
        broker, _ = found
        waiting = self.scheduled(route)
        if waiting and not drop_retries:
            plural = "retry" if waiting == 1 else "retries"
            raise InvalidInput(
                f"on NATS JetStream a reset recreates route '{route}''s consumer, which drops its "
                f"{waiting} scheduled {plural}: add --drop-retries"
            )
        position: int = self._run(self._recreate, route, broker, to)
        return position

    async def _recreate(self, js: Any, route: str, broker: str, to: str) -> int:
        if route not in self.specs:
            await self._learn(js)
        return await consumers.recreate(js, self.spec(route, broker), to)

    def forget(self, route: str) -> None:
        found = self._consumer(route)
        if found is not None:
            self._run(consumers.delete, route, found[0])
        self._run(deadletters.purge, route)

    # ------------------------------------------------------------------ retries waiting

    def retry_state(self, route: str, seq: int) -> Retry | None:
        return None  # a NAK'd message's schedule is the server's; nothing per event to show

    def scheduled(self, route: str) -> int:
        """Messages the route's consumer handed out and has not had acknowledged: retries
        waiting for their delay (a NAK'd message stays pending until redelivered) and attempts
        in flight. The server does not tell the two apart; a reset drops both."""
        from evroute.store.nats.status import pending

        found: dict[str, tuple[int, int]] = self._run(pending, [route])
        return found.get(route, (0, 0))[1]

    def delayed(self, routes: Sequence[str]) -> dict[str, int]:
        """Delayed events are NAK'd with their remaining delay, so the server holds them among
        the consumer's unacknowledged messages (``scheduled``); it does not tell them apart."""
        return {}

    def pace(self, route: str) -> Any:
        from evroute.store.pace import RoutePace

        async def get(js: Any) -> dict[str, Any] | None:
            return await kv.get_pace(await kv.bucket(js, names.PACE_BUCKET, None), route)

        found = self._run(get)
        if found is None:
            return None
        return RoutePace(route, bool(found["throttled"]), found.get("endpoints"), float(found["updated_at"]))

    def put_pace(self, paces: Sequence[Any]) -> None:
        if not paces:
            return

        async def put(js: Any) -> None:
            await kv.put_pace(
                await kv.bucket(js, names.PACE_BUCKET, await self._replicas(js), kv.WORKERS_MAX_AGE), paces
            )

        self._run(put)

    def last_outcome(self) -> int:
        from evroute.store.nats import outcomes

        return int(self._run(outcomes.last))

    def recent_outcomes(self, after: int, limit: int = 1000) -> list[Any]:
        from evroute.store.nats import outcomes

        found: list[Any] = self._run(outcomes.after, after, limit, self._outcome_events)
        return found

    def changed(self) -> int:
        """The newest recent outcome: moves whenever a worker delivered (the console's wake-up)."""
        return self.last_outcome()

    def attempts_of(self, seq: int) -> list[Any]:
        return []  # attempt history is kept by the SQLite store only

    def retry_summary(self, routes: Sequence[str] | None = None) -> dict[str, tuple[int, float | None]]:
        from evroute.store.nats.status import redelivering

        found: dict[str, tuple[int, float | None]] = self._run(redelivering)
        return {r: v for r, v in found.items() if v[0] and (routes is None or r in routes)}

    # ------------------------------------------------------------------ dead letters

    def dead_letters(self, route: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        found: list[DeadLetter] = self._run(deadletters.listing, route, limit)
        return found

    def dead_letter(self, dlq_id: int) -> DeadLetter:
        found: DeadLetter = self._run(deadletters.get, dlq_id)
        return found

    def dead_letters_of(self, seq: int | None = None, event_id: str | None = None) -> list[DeadLetter]:
        return [
            d
            for d in self.dead_letters()
            if (seq is not None and d.seq == seq) or (event_id is not None and d.event.id == event_id)
        ]

    def dead_letter_counts(self, routes: Sequence[str] | None = None) -> dict[str, int]:
        found: dict[str, int] = self._run(deadletters.counts)
        return {r: n for r, n in found.items() if routes is None or r in routes}

    def replay(self, ids: Iterable[int], now: float | None = None) -> int:
        count: int = self._run(deadletters.replay, list(ids), now)
        return count

    def purge(self, route: str | None = None, before: float | None = None) -> int:
        count: int = self._run(deadletters.purge, route, before)
        return count

    # ------------------------------------------------------------------ routes in KV

    def routes(self, path: str) -> RoutesDoc | None:
        async def get(js: Any) -> tuple[str, int] | None:
            return await kv.get_routes(await kv.bucket(js, names.ROUTES_BUCKET, None))

        found = self._run(get)
        return None if found is None else RoutesDoc(found[0], found[1])

    def put_routes(self, path: str, text: str, revision: int | None) -> int:
        async def put(js: Any) -> int:
            bucket = await kv.bucket(js, names.ROUTES_BUCKET, await self._replicas(js, text))
            return await kv.put_routes(bucket, text, revision)

        written: int = self._run(put)
        parsed = parse_routes(text)
        if parsed is not None:
            self.specs = {r.name: spec_of(r) for r in parsed.routes}
            self.settings = stream_settings(parsed.settings)
        return written

    async def _replicas(self, js: Any, text: str | None = None) -> int:
        if text is not None:
            parsed = parse_routes(text)
            if parsed is not None:
                return int(parsed.settings.nats_replicas)
        return self.settings.replicas if self.settings is not None else 1

    # ------------------------------------------------------------------ workers, housekeeping

    def workers(self, now: float) -> list[Presence]:
        from evroute.store.nats.status import presences

        found: list[Presence] = self._run(presences, now)
        return found

    def collect(
        self,
        routes: Sequence[RouteStart],
        retention: float,
        now: float,
        limit: int | None,
        *,
        chunk: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        return 0  # the stream's max age drops old events on the server

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[object]:
        yield None

    def deliveries(self) -> Any:
        from evroute.store.nats.deliveries import NatsDeliveries

        return NatsDeliveries(self)

    def writable(self, wait_ms: int = 250) -> bool:
        try:
            self._run(lambda js: js.account_info())
        except Exception:
            return False
        return True


def spec_of(route: Any) -> ConsumerSpec:
    d = route.delivery
    return ConsumerSpec(
        route=route.name,
        broker=route.broker,
        timeout=float(d.timeout),
        concurrency=int(d.concurrency),
        ordered=d.ordering == "ordered",
    )


def stream_settings(settings: Any) -> StreamSettings:
    return StreamSettings(
        replicas=int(settings.nats_replicas),
        max_age=float(settings.retention or streams.DEFAULT_MAX_AGE),
        duplicate_window=float(settings.nats_duplicate_window),
    )


def parse_routes(text: str) -> Any | None:
    """The routes' structure (names, brokers, policies, settings); None when it does not load."""
    from evroute.errors import EvrouteError
    from evroute.routes.load import AnyVariable, load_routes_text

    try:
        return load_routes_text(text, names.ROUTES_BUCKET, AnyVariable())
    except EvrouteError:
        return None


def open_store(url: Any, credentials: Any = None) -> NatsStore:
    opts = connection.parse_url(
        url.url,
        creds=getattr(credentials, "creds", None),
        token=getattr(credentials, "token", None),
    )
    return NatsStore(opts, url.url)


if TYPE_CHECKING:  # mypy checks that both halves fill the seam

    def _fills(store: NatsStore) -> EventStore:
        return store

    def _fills_worker(d: NatsDeliveries) -> Deliveries:
        return d


__all__ = ["NatsStore", "open_store"]
