"""Flow and time in the running engine, against real loopback receivers and a real SQLite file:
consumer groups, rate limits, a subscriber's Retry-After, delayed events and PingSource ticks.
Where time matters the engine runs on an injected clock (real time plus an offset the test
moves), so nothing waits a minute or an hour for real."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from evroute.clock import rfc3339
from evroute.cloudevent import make_event
from evroute.inspect import route_status, trace_event
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters, lease, retries
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Reply


def routes_of(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes_text(path.read_text(), str(path))


def prepare(db: str, routeset) -> None:  # type: ignore[no-untyped-def]
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])


def publish(db: str, n: int, prefix: str = "e", **extensions: str) -> list[str]:
    events = [
        make_event(type="order.placed", source="/shop", id=f"{prefix}-{i}", extensions=extensions or None)
        for i in range(n)
    ]
    with Store(db) as store:
        event_log.append(store, "default", events)
    return [e.id for e in events]


class Clock:
    """Real time plus an offset the test moves: the engine's injected clock."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


def run_engine(
    db: str,
    routeset,  # type: ignore[no-untyped-def]
    *,
    clock: Callable[[], float] = time.time,
    drain: bool = True,
    during: Callable[[Engine], Awaitable[None]] | None = None,
    timeout: float = 60.0,
) -> None:
    """Run an engine until idle (``drain``: nothing left at all; else nothing due now), or
    while ``during`` runs."""

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, routeset, clock=clock, once=not drain and during is None)
        await engine.start()
        try:
            if during is not None:
                await during(engine)
            else:
                await engine.run_until_idle(drain)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), timeout))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- competing consumers


def test_three_endpoints_share_3000_deliveries(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    group = [receivers(lambda r: Reply(delay=0.002)) for _ in range(3)]
    uris = ", ".join(f'"{r.url}/"' for r in group)
    rs = routes_of(tmp_path, f"routes: [{{name: orders, subscriber: {{uris: [{uris}]}}}}]")
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 3000)
    run_engine(db, rs)
    seen = Counter(i for r in group for i in r.ids())
    assert seen == Counter(dict.fromkeys(ids, 1))  # every event once, to one endpoint
    shares = [len(r.requests) for r in group]
    assert min(shares) >= 600, shares  # each takes at least 20 %
    with Store(db) as store:
        doc = route_status(store, rs, time.time())
    endpoints = doc["routes"][0]["endpoints"]
    assert [e["uri"] for e in endpoints] == [f"{r.url}/" for r in group]
    assert all(e["delivered"] >= 600 and e["healthy"] for e in endpoints), endpoints


def test_one_endpoint_down_the_others_deliver_everything_once(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    up = [receivers(), receivers()]
    down = f"http://127.0.0.1:{closed_port()}/"
    uris = ", ".join([f'"{up[0].url}/"', f'"{down}"', f'"{up[1].url}/"'])
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: orders
            subscriber: {{uris: [{uris}]}}
            delivery: {{retry: 3, backoffDelay: 20ms, concurrency: 8, endpointCooldown: 30s}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 300)
    run_engine(db, rs)
    seen = Counter(i for r in up for i in r.ids())
    assert seen == Counter(dict.fromkeys(ids, 1))
    with Store(db) as store:
        assert deadletters.listing(store) == []
        assert retries.count(store) == 0
    # The endpoint that refused was tried, then left alone for its cooldown.
    failed_first = sum(1 for r in up for i in r.requests if i.headers["evroute-attempt"] == "2")
    assert 1 <= failed_first <= 8
    # Each attempt says which endpoint took it: the refused one, then a live one.
    retried = next(i.ce_id for r in up for i in r.requests if i.headers["evroute-attempt"] == "2")
    with Store(db) as store:
        shown = trace_event(store, rs, retried)
    (entry,) = shown["routes"]
    assert entry["attempts"][0]["endpoint"] == down
    assert entry["attempts"][0]["error"].endswith(f" at {down}")
    assert entry["attempts"][-1]["endpoint"] in {f"{up[0].url}/", f"{up[1].url}/"}


# --------------------------------------------------------------------------- rate limits


def test_rate_limit_spaces_60_events_over_three_seconds(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: slow
            subscriber: {sink.url}/
            delivery: {{rateLimit: {{rate: 20, per: 1s, burst: 1}}, concurrency: 16}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 60)
    seen_throttled: list[bool] = []

    async def watch(engine: Engine) -> None:
        await asyncio.sleep(1.0)
        await engine.commit()
        with Store(db) as store:
            lease.acquire(store, lease.holder_id())  # `status` shows what a running worker said
            seen_throttled.append(route_status(store, rs, time.time())["routes"][0]["throttled"])
        await engine.run_until_idle(True)

    run_engine(db, rs, during=watch)
    times = sorted(r.at for r in sink.requests)
    assert sorted(sink.ids()) == sorted(ids)
    assert times[-1] - times[0] >= 2.9
    with Store(db) as store:
        cursor = cursors.get(store, "slow")
        assert cursor is not None and cursor.failed == 0 and retries.count(store) == 0
    assert all(r.headers["evroute-attempt"] == "1" for r in sink.requests)  # waiting spent no attempt
    assert seen_throttled == [True]


def test_429_with_retry_after_pauses_the_whole_route(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    first = []

    def behaviour(req):  # type: ignore[no-untyped-def]
        if not first:
            first.append(req.at)
            return Reply(429, headers={"Retry-After": "1"})
        return Reply(200)

    sink = receivers(behaviour)
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: limited
            subscriber: {sink.url}/
            delivery: {{concurrency: 1, backoffDelay: 10ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 5)
    run_engine(db, rs)
    later = [r.at for r in sink.requests[1:]]
    assert len(later) == 5 and sorted(set(sink.ids())) == sorted(ids)
    # Nothing else went out until the Retry-After was over, though the other events were ready.
    assert min(later) - first[0] >= 0.95


# --------------------------------------------------------------------------- delayed delivery


def test_delayed_event_goes_after_later_ones_and_not_before_its_time(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: ordered
            subscriber: {sink.url}/o
            delivery: {{ordering: ordered}}
          - name: free
            subscriber: {sink.url}/f
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    clock = Clock()
    due = clock() + 3600  # an hour from now, on the engine's clock
    publish(db, 1, prefix="later", evroutedeliverat=rfc3339(due) or "")
    publish(db, 3, prefix="now")
    run_engine(db, rs, clock=clock, drain=False)
    assert sorted(r.ce_id for r in sink.requests) == sorted(["now-0", "now-1", "now-2"] * 2)
    with Store(db) as store:
        doc = route_status(store, rs, clock())
        assert [r["scheduled"] for r in doc["routes"]] == [1, 1]
        assert [r["retrying"] for r in doc["routes"]] == [0, 0]
        shown = trace_event(store, rs, "later-0", now=clock())
    assert {e["state"] for e in shown["routes"]} == {"scheduled"}
    assert all(e["due"] == rfc3339(due) for e in shown["routes"])
    # A worker restart while it waits changes nothing; an hour later (on its clock) it goes.
    clock.offset = 3599.0
    run_engine(db, rs, clock=clock, drain=False)
    assert "later-0" not in sink.ids()
    clock.offset = 3600.5
    run_engine(db, rs, clock=clock, drain=False)
    arrivals = [r.ce_id for r in sink.requests]
    assert arrivals.count("later-0") == 2 and arrivals[-2:] == ["later-0", "later-0"]
    with Store(db) as store:
        assert retries.count(store) == 0
        req = next(r for r in sink.requests if r.ce_id == "later-0")
        assert req.headers["evroute-attempt"] == "1"


def test_delayed_event_on_a_real_clock_arrives_on_time(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(tmp_path, f"routes: [{{name: r, subscriber: '{sink.url}/'}}]")
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    due = time.time() + 1.0
    publish(db, 1, prefix="later", evroutedeliverat=rfc3339(due) or "")
    publish(db, 2, prefix="now")
    run_engine(db, rs)  # --drain: waits for the scheduled event too
    assert [r.ce_id for r in sink.requests] == ["now-0", "now-1", "later-0"]
    assert sink.requests[-1].at >= due - 0.005


# --------------------------------------------------------------------------- PingSource


def test_pingsource_fires_once_a_minute_and_not_twice_across_a_restart(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: audit
            filter: {{type: dev.knative.sources.ping}}
            subscriber: {sink.url}/
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {{name: beat, namespace: shop}}
        spec:
          schedule: "* * * * *"
          contentType: application/json
          data: '{{"beat": true}}'
          sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    now = time.time()
    minute = math.ceil(now / 60) * 60 + 60
    clock = Clock(minute - 0.3 - now)  # the engine's clock is 0.3 s before a minute starts

    async def for_a_while(engine: Engine) -> None:
        await asyncio.sleep(0.8)
        await engine.run_until_idle(False)

    run_engine(db, rs, clock=clock, during=for_a_while)
    # Restarted within the same minute: the tick is not sent again.
    run_engine(db, rs, clock=clock, during=for_a_while)
    assert len(sink.requests) == 1
    req = sink.requests[0]
    assert req.headers["ce-type"] == "dev.knative.sources.ping"
    assert req.headers["ce-source"] == "/apis/v1/namespaces/shop/pingsources/beat"
    assert req.headers["ce-time"] == rfc3339(minute)
    assert json.loads(req.body) == {"beat": True}
    # The next minute brings the next tick (the clock set just before it again).
    clock.offset = minute + 60 - 0.3 - time.time()
    run_engine(db, rs, clock=clock, during=for_a_while)
    assert [r.headers["ce-time"] for r in sink.requests] == [rfc3339(minute), rfc3339(minute + 60)]


def test_pingsource_uri_sink_is_delivered_by_its_own_route(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(
        tmp_path,
        f"""
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {{name: direct}}
        spec:
          schedule: "* * * * *"
          sink: {{uri: "{sink.url}/ping"}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    now = time.time()
    clock = Clock(math.ceil(now / 60) * 60 + 60 - 0.2 - now)

    async def for_a_while(engine: Engine) -> None:
        await asyncio.sleep(0.6)
        await engine.run_until_idle(False)

    run_engine(db, rs, clock=clock, during=for_a_while)
    assert [r.path for r in sink.requests] == ["/ping"]
    assert sink.requests[0].headers["ce-source"] == "/apis/v1/namespaces/default/pingsources/direct"


def test_pingsources_follow_a_reload_and_do_not_tick_in_a_burst(tmp_path: Path) -> None:
    def with_source(name: str) -> str:
        return f"""
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {{name: {name}}}
        spec: {{sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}}}
        """

    first = routes_of(tmp_path, with_source("a"))
    second = routes_of(tmp_path, with_source("b"))
    db = str(tmp_path / "ev.db")
    seen: list[list[str]] = []

    async def reload(engine: Engine) -> None:
        seen.append(sorted(engine.pings.ticker.sources))
        await engine.apply(second)
        seen.append(sorted(engine.pings.ticker.sources))
        await engine.apply(routes_of(tmp_path, "routes: []"))
        seen.append(sorted(engine.pings.ticker.sources))

    run_engine(db, first, during=reload)
    assert seen == [["a"], ["b"], []]

    async def burst() -> None:
        store = Store(db)
        engine = Engine(store, first, once=True)
        await engine.start()
        try:
            assert engine.pings is None
        finally:
            await engine.stop()
            store.close()

    asyncio.run(burst())
