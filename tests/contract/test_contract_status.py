"""``evroute status`` and ``evroute events show`` on every store: state written through the
seam the way a worker writes it (commits, retries, dead letters, presence), read back."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest

from contract.stores import StoreCase
from evroute.clock import parse_time
from evroute.cloudevent import make_event
from evroute.errors import NotFound
from evroute.inspect import route_status, trace_event
from evroute.routes.model import Matcher, Route, RouteSet, Subscriber
from evroute.store.base import EventStore, NewDeadLetter, Progress, Retry, starts

STATUS_KEYS = {
    "name",
    "broker",
    "subscriber",
    "cursor",
    "lag",
    "in_flight",
    "retrying",
    "next_retry_due",
    "dead_letters",
    "delivered",
    "failed",
    "last_error",
    "paused",
    "breaker",
    "throttled",
    "scheduled",
    "endpoints",
}
TRACE_ROUTE_KEYS = {
    "route",
    "state",
    "attempt",
    "next_due",
    "last_error",
    "dlq_id",
    "failed_filter",
    "attempts",
    "due",
}


def exact(**want: str) -> Matcher:
    """A Knative attributes filter as the routes loader builds it: exact match, names the failed part."""

    def explain(attrs: Mapping[str, object]) -> str | None:
        for key, value in want.items():
            if attrs.get(key) != value:
                return f"filter {key}={value!r} (event has {attrs.get(key)!r})"
        return None

    return Matcher(lambda a: explain(a) is None, explain, " and ".join(f"{k}={v}" for k, v in want.items()))


def route(name: str, broker: str = "default", **kw: Any) -> Route:
    kw.setdefault("subscriber", Subscriber(uri=f"http://127.0.0.1:9/{name}"))
    return Route(name=name, broker=broker, start="earliest", **kw)


def publish(
    store: EventStore, n: int, broker: str = "default", type: str = "order.placed", prefix: str = "e"
) -> list[int]:
    seqs = []
    for i in range(n):
        event = make_event(
            type=type,
            source="/shop",
            id=f"{prefix}{i}",
            data=json.dumps({"n": i}).encode(),
            datacontenttype="application/json",
        )
        result = store.append(broker, [event])
        seqs.append(result.seqs[0] if result.seqs else store.find(event.id, broker)[-1].seq)
    return [int(s) for s in seqs if s is not None]


def ensure(store: EventStore, rs: RouteSet) -> None:
    store.ensure_routes(starts(rs.routes))


def advance(store: EventStore, name: str, position: int, **kw: Any) -> None:
    cursor = store.cursor(name)
    assert cursor is not None
    assert (
        asyncio.run(store.deliveries().commit([Progress(name, position, cursor.epoch, **kw)], time.time()))
        == []
    )


def retry(store: EventStore, *rows: Retry) -> None:
    for row in rows:
        asyncio.run(store.deliveries().retry(row, None))


def dead(store: EventStore, name: str, seq: int, now: float, broker: str = "default") -> int:
    stored = store.event(seq)
    assert stored is not None
    letter = NewDeadLetter(
        route=name,
        broker=broker,
        seq=seq,
        event=stored.event,
        attempts=4,
        status=503,
        reason="retries exhausted",
        error="HTTP 503",
        body=b"down\xff",
        first_failed_at=now - 60,
        dead_at=now,
    )
    return asyncio.run(store.deliveries().dead_letter(letter, None, None))


def build_every_state(store: EventStore, now: float) -> tuple[RouteSet, int]:
    """One event (seq 1) in every state, one route each; plus a route on another broker."""
    rs = RouteSet(
        routes=(
            route("done", matcher=exact(type="order.placed")),
            route("waiting"),
            route("flaky"),
            route("gave-up"),
            route("audit", matcher=exact(type="audit.logged")),
            route("held", paused=True),
            route("elsewhere", broker="other"),
        )
    )
    [seq, _second] = publish(store, 2)
    ensure(store, rs)
    advance(store, "done", 2, delivered=2)
    advance(store, "audit", 2)
    # flaky: the first attempt failed, the retry row holds it; the watermark moved past it.
    retry(store, Retry("flaky", seq, 1, now + 30, now - 1, 503, "HTTP 503 Service Unavailable", None))
    advance(store, "flaky", 2, failed=1, last_error="HTTP 503 Service Unavailable", last_error_at=now - 1)
    dlq_id = dead(store, "gave-up", seq, now)
    advance(store, "gave-up", 2, failed=4)
    return rs, dlq_id


def test_events_show_reports_every_state_with_the_exact_json_shape(store: StoreCase) -> None:
    with store.store() as s:
        now = time.time()
        rs, dlq_id = build_every_state(s, now)
        doc = trace_event(s, rs, "e0")
        assert set(doc) == {"seq", "broker", "published_at", "event", "routes"}
        assert doc["seq"] == 1 and doc["broker"] == "default"
        assert doc["published_at"].endswith("Z") and parse_time(doc["published_at"]) == pytest.approx(
            now, abs=60
        )
        assert doc["event"]["id"] == "e0" and doc["event"]["data"] == {"n": 0}
        for entry in doc["routes"]:
            assert set(entry) == TRACE_ROUTE_KEYS
        states = {e["route"]: e for e in doc["routes"]}
        assert "elsewhere" not in states  # routes on other brokers are not listed
        assert [e["route"] for e in doc["routes"]] == ["done", "waiting", "flaky", "gave-up", "audit", "held"]
        assert states["done"] == dict.fromkeys(TRACE_ROUTE_KEYS) | {
            "route": "done",
            "state": "delivered",
            "attempts": [],
        }
        assert states["waiting"]["state"] == "pending"
        flaky = states["flaky"]
        assert flaky["state"] == "retrying" and flaky["attempt"] == 1
        assert parse_time(flaky["next_due"]) == pytest.approx(now + 30, abs=0.01)
        assert flaky["last_error"] == "HTTP 503 Service Unavailable" and flaky["dlq_id"] is None
        gave_up = states["gave-up"]
        assert gave_up["state"] == "dead" and gave_up["dlq_id"] == dlq_id and gave_up["attempt"] == 4
        assert gave_up["last_error"] == "HTTP 503"
        assert states["audit"]["state"] == "filtered"
        assert states["audit"]["failed_filter"] == "filter type='audit.logged' (event has 'order.placed')"
        assert states["held"]["state"] == "paused"
        # The same event by seq gives the same document.
        assert trace_event(s, rs, "1") == doc


def test_events_show_replayed_dead_letter_is_retrying_with_its_dlq_id(store: StoreCase) -> None:
    with store.store() as s:
        now = time.time()
        rs = RouteSet(routes=(route("pay"),))
        [seq] = publish(s, 1)
        s.ensure_routes(starts([route("pay")]))
        dlq_id = dead(s, "pay", seq, now)
        advance(s, "pay", seq)
        assert trace_event(s, rs, str(seq))["routes"][0]["state"] == "dead"
        s.replay([dlq_id], now=now)
        entry = trace_event(s, rs, str(seq))["routes"][0]
        assert entry["state"] == "retrying" and entry["attempt"] == 0 and entry["dlq_id"] == dlq_id


def test_events_show_picks_the_newest_of_an_id_in_several_brokers(store: StoreCase) -> None:
    with store.store() as s:
        rs = RouteSet(routes=(route("a"), route("b", broker="other")))
        publish(s, 1, broker="default", prefix="dup")
        [newest] = publish(s, 1, broker="other", prefix="dup")
        ensure(s, rs)
        doc = trace_event(s, rs, "dup0")
        assert doc["seq"] == newest and doc["broker"] == "other"
        assert [e["route"] for e in doc["routes"]] == ["b"]


def test_events_show_unknown_key_is_not_found(store: StoreCase) -> None:
    with store.store() as s:
        with pytest.raises(NotFound, match="no event with id or seq 'nope'"):
            trace_event(s, RouteSet(), "nope")
        with pytest.raises(NotFound):
            trace_event(s, RouteSet(), "999")


def test_status_json_shape_and_values(store: StoreCase) -> None:
    with store.store() as s:
        now = time.time()
        secret = "tok-5ecret-value"
        rs = RouteSet(
            routes=(
                route("inventory"),
                route(
                    "payment",
                    subscriber=Subscriber(uri=f"http://127.0.0.1:9/pay?key={secret}"),
                    secrets=frozenset({secret}),
                    paused=True,
                ),
                route("fresh", broker="other"),
            )
        )
        publish(s, 10)
        s.ensure_routes(starts([route("inventory"), route("payment"), route("old-route")]))
        advance(s, "inventory", 7, delivered=6, in_flight=2, breaker="open")
        retry(s, Retry("inventory", 3, 2, now + 5, now - 10, 500, "HTTP 500", None))
        retry(s, Retry("inventory", 4, 1, now + 2, now - 10, 500, "HTTP 500", None))
        advance(
            s, "payment", 4, failed=1, last_error=f"connection refused to ?key={secret}", last_error_at=now
        )
        dead(s, "payment", 2, now)
        dead(s, "payment", 3, now)
        worker = s.deliveries()
        assert asyncio.run(worker.join("w1", now - 100))
        assert asyncio.run(worker.beat("w1", now - 1, {"delivered": 6}))

        doc = route_status(s, rs, now)
        assert set(doc) == {"worker", "workers", "routes"}
        assert doc["worker"] == {"state": "running", "pid": os.getpid(), "since": doc["worker"]["since"]}
        assert parse_time(doc["worker"]["since"]) == pytest.approx(now - 100, abs=0.01)
        for row in doc["routes"]:
            assert set(row) == STATUS_KEYS
        rows = {r["name"]: r for r in doc["routes"]}
        assert [r["name"] for r in doc["routes"]] == ["inventory", "payment", "fresh", "old-route"]
        inv = rows["inventory"]
        assert (inv["cursor"], inv["lag"], inv["in_flight"], inv["breaker"]) == (7, 3, 2, "open")
        assert inv["retrying"] == 2 and parse_time(inv["next_retry_due"]) == pytest.approx(now + 2, abs=0.01)
        assert (inv["delivered"], inv["failed"], inv["dead_letters"], inv["paused"]) == (6, 0, 0, False)
        pay = rows["payment"]
        assert pay["subscriber"] == "http://127.0.0.1:9/pay?key=***"
        assert pay["last_error"] == "connection refused to ?key=***"
        assert secret not in json.dumps(doc)
        assert (pay["cursor"], pay["lag"], pay["dead_letters"], pay["paused"]) == (4, 6, 2, True)
        assert pay["retrying"] == 0 and pay["next_retry_due"] is None
        fresh = rows["fresh"]
        assert (fresh["cursor"], fresh["lag"], fresh["subscriber"]) == (
            None,
            None,
            "http://127.0.0.1:9/fresh",
        )
        old = rows["old-route"]
        assert (old["subscriber"], old["paused"], old["cursor"], old["lag"]) == (None, None, 0, 10)


def test_status_without_a_live_worker(store: StoreCase) -> None:
    with store.store() as s:
        now = time.time()
        s.ensure_routes(starts([route("a")]))
        advance(s, "a", 0, in_flight=5, breaker="open")
        doc = route_status(s, RouteSet(routes=(route("a"),)), now)
        assert doc["worker"] == {"state": "not running", "pid": None, "since": None}
        assert doc["routes"][0]["in_flight"] == 0 and doc["routes"][0]["breaker"] == "closed"
        # A worker that left is not running either.
        worker = s.deliveries()
        assert asyncio.run(worker.join("w1", now - 10))
        asyncio.run(worker.leave("w1"))
        assert route_status(s, RouteSet(), now)["worker"]["state"] == "not running"


def test_status_lists_the_live_workers_with_their_figures(store: StoreCase) -> None:
    with store.store() as s:
        now = time.time()
        s.ensure_routes(starts([route("a")]))
        worker = s.deliveries()

        async def work() -> None:
            assert await worker.join("w1", now - 50)
            cursor = await worker.cursor("a")
            assert cursor is not None
            await worker.commit([Progress("a", 0, cursor.epoch, delivered=3, failed=1)], now)
            assert await worker.beat("w1", now - 1, {})

        asyncio.run(work())
        doc = route_status(s, RouteSet(routes=(route("a"),)), now)
        assert [set(w) for w in doc["workers"]] == [
            {"id", "host", "pid", "since", "heartbeat", "delivered", "failed"}
        ]
        (w,) = doc["workers"]
        assert (w["id"], w["host"], w["pid"], w["delivered"], w["failed"]) == (
            "w1",
            socket.gethostname(),
            os.getpid(),
            3,
            1,
        )
        assert parse_time(w["since"]) == pytest.approx(now - 50, abs=0.01)
        assert parse_time(w["heartbeat"]) == pytest.approx(now - 1, abs=0.01)
        asyncio.run(worker.leave("w1"))
        assert route_status(s, RouteSet(), now)["workers"] == []
