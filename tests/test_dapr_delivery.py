"""Dapr Subscription and Resiliency documents delivering for real: the engine in-process,
loopback HTTP apps, a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from evroute.cloudevent import make_event
from evroute.errors import RoutesInvalid
from evroute.routes.load import load_routes_text
from evroute.routes.model import RouteSet
from evroute.store import Store, cursors, deadletters, retries
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Reply, Request


def routes_of(tmp_path: Path, text: str) -> RouteSet:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes_text(path.read_text(), str(path))


def prepare(db: str, rs: RouteSet) -> None:
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes])


def publish(db: str, broker: str, events: list[tuple[str, str, dict[str, object]]]) -> None:
    """(id, topic, data) triples, as Dapr's publish API stores them."""
    with Store(db) as store:
        event_log.append(
            store,
            broker,
            [
                make_event(
                    type="com.dapr.event.sent",
                    source="Dapr",
                    id=eid,
                    data=json.dumps(data).encode(),
                    datacontenttype="application/json",
                    extensions={"topic": topic, "pubsubname": broker},
                )
                for eid, topic, data in events
            ],
        )


def drain(db: str, rs: RouteSet, timeout: float = 60.0) -> None:
    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await engine.run_until_idle(True)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), timeout))


def body_id(r: Request) -> str:
    return str(json.loads(r.body)["id"])


@pytest.fixture
def app(receivers):  # type: ignore[no-untyped-def]
    return receivers


def test_subscription_routes_by_cel_rule_to_paths_and_ignores_other_topics(tmp_path: Path, app) -> None:  # type: ignore[no-untyped-def]
    orders = app()
    rs = routes_of(
        tmp_path,
        f"""
        services:
          order-processor: {orders.url}
        ---
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata:
          name: order-pub-sub
        spec:
          topic: orders
          routes:
            rules:
              - match: event.data.amount > 100 && event.data.region == "eu"
                path: /orders/large-eu
              - match: event.data.amount > 100
                path: /orders/large
            default: /orders
          pubsubname: pubsub
        scopes:
          - order-processor
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(
        db,
        "pubsub",
        [
            ("big-eu", "orders", {"amount": 150.5, "region": "eu"}),
            ("big-us", "orders", {"amount": 101, "region": "us"}),
            ("small", "orders", {"amount": 100}),
            ("no-amount", "orders", {"region": "eu"}),
            ("other-topic", "payments", {"amount": 500, "region": "eu"}),
        ],
    )
    publish(db, "default", [("other-broker", "orders", {"amount": 500})])
    drain(db, rs)
    by_id = {body_id(r): r for r in orders.requests}
    assert Counter(body_id(r) for r in orders.requests) == Counter(
        {"big-eu": 1, "big-us": 1, "small": 1, "no-amount": 1}
    )
    assert by_id["big-eu"].path == "/orders/large-eu"
    assert by_id["big-us"].path == "/orders/large"
    assert by_id["small"].path == "/orders"
    assert by_id["no-amount"].path == "/orders"  # a missing field: the rule does not match
    # Dapr sends structured CloudEvents.
    req = by_id["big-eu"]
    assert req.headers["content-type"].startswith("application/cloudevents+json")
    sent = json.loads(req.body)
    assert (sent["topic"], sent["pubsubname"], sent["data"]) == (
        "orders",
        "pubsub",
        {"amount": 150.5, "region": "eu"},
    )


def test_no_matching_rule_without_default_is_filtered(tmp_path: Path, app) -> None:  # type: ignore[no-untyped-def]
    orders = app()
    rs = routes_of(
        tmp_path,
        f"""
        services: {{orders: {orders.url}}}
        ---
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata: {{name: large}}
        spec:
          pubsubname: pubsub
          topic: orders
          routes:
            rules:
              - {{match: 'event.data.amount > 100', path: /large}}
        scopes: [orders]
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, "pubsub", [("a", "orders", {"amount": 5}), ("b", "orders", {"amount": 500})])
    drain(db, rs)
    assert [(r.path, body_id(r)) for r in orders.requests] == [("/large", "b")]
    from evroute.inspect import trace_event

    with Store(db) as store:
        detail = trace_event(store, rs, "a")
    [entry] = detail["routes"]
    assert entry["state"] == "filtered"
    assert entry["failed_filter"].startswith("no matching rule")


def test_dead_letter_topic_reaches_a_subscription_on_that_topic(tmp_path: Path, app) -> None:  # type: ignore[no-untyped-def]
    broken = app(lambda r: Reply(500, b"down"))
    dlq = app()
    rs = routes_of(
        tmp_path,
        f"""
        services:
          checkout: {broken.url}
          dlq-app: {dlq.url}
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Resiliency
        metadata: {{name: fast}}
        spec:
          policies:
            retries:
              quick: {{policy: constant, duration: 10ms, maxRetries: 2}}
          targets:
            components:
              pubsub: {{inbound: {{retry: quick}}}}
        ---
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata: {{name: checkout}}
        spec:
          pubsubname: pubsub
          topic: orders
          routes: {{default: /checkout}}
          deadLetterTopic: poisonMessages
        scopes: [checkout]
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {{name: poison}}
        spec:
          pubsubname: pubsub
          topic: poisonMessages
          route: /failed-messages
        scopes: [dlq-app]
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, "pubsub", [("o-1", "orders", {"order": 1})])
    drain(db, rs)
    assert [body_id(r) for r in broken.requests] == ["o-1"] * 3  # maxRetries 2: three attempts
    [got] = dlq.requests
    assert got.path == "/failed-messages"
    sent = json.loads(got.body)
    assert sent["topic"] == "poisonMessages"
    assert sent["data"] == {"order": 1}
    assert sent["id"].startswith("o-1")
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert (letter.route, letter.attempts, letter.reason) == ("checkout", 3, "retries exhausted")
        assert letter.event.id == "o-1"


@pytest.mark.parametrize(
    ("reply", "attempts", "reason"),
    [
        (Reply(200, b'{"status": "SUCCESS"}'), 1, None),
        (Reply(200, b"not json at all"), 1, None),
        (Reply(204), 1, None),
        (Reply(200, b'{"status": "DROP"}'), 1, "dropped by subscriber"),
        (Reply(200, b'{"status": "RETRY"}'), 3, "retries exhausted"),
        (Reply(200, b'{"status": "MAYBE"}'), 3, "retries exhausted"),
        (Reply(404, b"no such route"), 1, "permanent failure"),
        (Reply(400, b"bad"), 3, "retries exhausted"),
        (Reply(503, b"busy"), 3, "retries exhausted"),
        # A CloudEvent body is not a reply for a Dapr app: success, nothing published.
        (
            Reply(
                200,
                b'{"specversion":"1.0","id":"r","source":"/x","type":"t"}',
                {"Content-Type": "application/cloudevents+json"},
            ),
            1,
            None,
        ),
    ],
)
def test_dapr_answer_contract(tmp_path: Path, app, reply: Reply, attempts: int, reason: str | None) -> None:  # type: ignore[no-untyped-def]
    sub = app(lambda r: reply)
    rs = routes_of(
        tmp_path,
        f"""
        services: {{orders: {sub.url}}}
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Resiliency
        metadata: {{name: fast}}
        spec:
          policies:
            retries: {{quick: {{policy: constant, duration: 10ms, maxRetries: 2}}}}
          targets:
            components: {{pubsub: {{inbound: {{retry: quick}}}}}}
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {{name: orders}}
        spec: {{pubsubname: pubsub, topic: orders, route: /orders}}
        scopes: [orders]
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, "pubsub", [("o-1", "orders", {"n": 1})])
    drain(db, rs)
    assert len(sub.requests) == attempts
    with Store(db) as store:
        letters = deadletters.listing(store)
        assert [d.reason for d in letters] == ([] if reason is None else [reason])
        assert event_log.last_seq(store) == 1  # no reply was published


def test_resiliency_retry_gives_max_retries_plus_one_attempts_at_its_spacing(tmp_path: Path, app) -> None:  # type: ignore[no-untyped-def]
    now = [1_000_000.0]
    seen: list[float] = []

    def fail(_r: Request) -> Reply:
        seen.append(now[0])
        return Reply(500)

    sub = app(fail)
    rs = routes_of(
        tmp_path,
        f"""
        services: {{orders: {sub.url}}}
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Resiliency
        metadata: {{name: r}}
        spec:
          policies:
            retries:
              pubsubRetry:
                policy: constant
                duration: 5s
                maxRetries: 3
          targets:
            components:
              pubsub:
                inbound:
                  retry: pubsubRetry
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {{name: orders}}
        spec: {{pubsubname: pubsub, topic: orders, route: /orders}}
        scopes: [orders]
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, "pubsub", [("o-1", "orders", {"n": 1})])

    async def until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            assert loop.time() < deadline, "condition not met"
            await asyncio.sleep(0.005)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, clock=lambda: now[0])
        await engine.start()
        try:
            for attempt in range(1, 5):
                await until(lambda a=attempt: len(sub.requests) >= a)
                if attempt == 4:
                    break
                await until(
                    lambda a=attempt: (r := retries.get(store, "orders", 1)) is not None and r.attempt == a
                )
                row = retries.get(store, "orders", 1)
                assert row is not None
                now[0] = row.due_at
                engine.retrier.notify()
            await until(lambda: bool(deadletters.listing(store)))
            # Held well past any further due time: no fifth attempt.
            now[0] += 3600
            engine.retrier.notify()
            await asyncio.sleep(0.1)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert len(seen) == 4  # maxRetries 3 + the first attempt
    assert [b - a for a, b in itertools.pairwise(seen)] == [5.0, 5.0, 5.0]


def test_unsupported_trip_expression_is_refused_with_its_line(tmp_path: Path) -> None:
    text = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
spec:
  policies:
    circuitBreakers:
      pubsubCB:
        maxRequests: 1
        timeout: 45s
        trip: totalFailures > 3 && requests > 10
  targets:
    components:
      pubsub:
        inbound:
          circuitBreaker: pubsubCB
"""
    with pytest.raises(RoutesInvalid) as info:
        load_routes_text(text, str(tmp_path / "routes.yaml"))
    assert info.value.problems == [
        f"{tmp_path / 'routes.yaml'}:11:15: resiliency 'myresiliency': spec.policies.circuitBreakers.pubsubCB.trip: "
        "trip 'totalFailures > 3 && requests > 10' is not supported "
        "(allowed: consecutiveFailures > N or consecutiveFailures >= N)"
    ]


def test_circuit_breaker_trip_forms_map_to_consecutive_failures(tmp_path: Path) -> None:
    def breaker(trip: str):  # type: ignore[no-untyped-def]
        text = f"""\
services: {{orders: http://127.0.0.1:1}}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {{name: r}}
spec:
  policies:
    timeouts: {{general: 3s}}
    circuitBreakers:
      cb: {{maxRequests: 1, timeout: 30s, trip: "{trip}"}}
  targets:
    components:
      pubsub: {{inbound: {{circuitBreaker: cb, timeout: general}}}}
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {{name: orders}}
spec: {{pubsubname: pubsub, topic: orders, route: /orders}}
scopes: [orders]
"""
        d = load_routes_text(text, str(tmp_path / "r.yaml")).routes[0].delivery
        return d.circuit_breaker.consecutive_failures, d.circuit_breaker.cooldown, d.timeout

    assert breaker("consecutiveFailures > 8") == (9, 30.0, 3.0)
    assert breaker("consecutiveFailures >= 5") == (5, 30.0, 3.0)
    assert breaker("consecutiveFailures>=2") == (2, 30.0, 3.0)


def test_dead_letter_topics_failing_into_each_other_stop_at_the_hop_limit(tmp_path: Path, app) -> None:  # type: ignore[no-untyped-def]
    broken = app(lambda r: Reply(404))
    rs = routes_of(
        tmp_path,
        f"""
        services: {{a: {broken.url}, b: {broken.url}}}
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {{name: first}}
        spec: {{pubsubname: pubsub, topic: one, route: /one, deadLetterTopic: two}}
        scopes: [a]
        ---
        apiVersion: dapr.io/v1alpha1
        kind: Subscription
        metadata: {{name: second}}
        spec: {{pubsubname: pubsub, topic: two, route: /two, deadLetterTopic: one}}
        scopes: [b]
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, "pubsub", [("x", "one", {})])
    drain(db, rs)
    from evroute.delivery.policy import HOP_LIMIT

    # The original, then one copy per hop up to the limit: each dead-lettered once (404).
    assert len(broken.requests) == HOP_LIMIT + 1
    with Store(db) as store:
        assert len(deadletters.listing(store)) == HOP_LIMIT + 1
