"""Delivery on every store: fan-out with independent positions, retries and their attempt
counts across a restart, dead letters and replay, ordered head-of-line, replies and the hop
limit. A real engine against real loopback HTTP receivers."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter

from contract.stores import StoreCase
from evroute.clock import rfc3339
from evroute.cloudevent import DELIVER_AT, make_event, to_binary

from receiver import Reply, Request


def test_order_fan_out_reaches_both_services_exactly_once(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    inventory, payment = receivers(), receivers()
    rs = store.routes(
        f"""
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/inventory
            delivery: {{retry: 3, backoffPolicy: exponential}}
          - name: payment
            filter: {{type: order.placed}}
            subscriber: {payment.url}/payment
            delivery: {{retry: 5, backoffPolicy: exponential}}
        """
    )
    ids = store.publish(100)
    store.publish(10, type="order.cancelled")
    store.drain(rs)
    assert Counter(inventory.ids()) == Counter({i: 1 for i in ids})
    assert Counter(payment.ids()) == Counter({i: 1 for i in ids})
    req = inventory.requests[0]
    assert req.headers["ce-type"] == "order.placed"
    assert req.headers["ce-source"] == "/shop"
    assert req.headers["evroute-attempt"] == "1"
    assert req.headers["prefer"] == "reply"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.body) == {"order": int(req.ce_id.split("-")[-1])}
    with store.store() as s:
        inv, pay = s.cursor("inventory"), s.cursor("payment")
        assert inv is not None and pay is not None
        assert inv.position == pay.position and inv.delivered == 100
        assert s.lag("default", inv.position) == 0


def test_independent_positions_one_route_behind_the_other(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    fast, slow = receivers(), receivers()
    rs = store.routes(
        f"""
        routes:
          - {{name: fast, subscriber: "{fast.url}/", start: earliest}}
          - {{name: slow, subscriber: "{slow.url}/", start: earliest, paused: true}}
        """
    )
    ids = store.publish(20)
    store.drain(rs)
    assert sorted(fast.ids()) == sorted(ids) and slow.ids() == []
    with store.store() as s:
        assert s.lag("default", s.cursor("fast").position) == 0  # type: ignore[union-attr]
        assert s.lag("default", s.cursor("slow").position) == 20  # type: ignore[union-attr]


def test_failing_route_does_not_delay_the_other_and_dead_letters_after_retries(
    store: StoreCase, receivers
) -> None:  # type: ignore[no-untyped-def]
    inventory = receivers(lambda r: Reply(500, b"inventory down"))
    payment = receivers()
    rs = store.routes(
        f"""
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
            delivery: {{retry: 3, backoffPolicy: exponential, backoffDelay: 200ms}}
          - name: payment
            filter: {{type: order.placed}}
            subscriber: {payment.url}/
            delivery: {{retry: 5}}
          - name: strict
            filter: {{type: order.refused}}
            subscriber: {receivers(lambda r: Reply(400, b"bad order")).url}/
        """
    )
    ids = store.publish(20)
    store.publish(1, type="order.refused")
    store.drain(rs)
    # Every payment delivery landed before inventory's last retry of the first event.
    last_payment = max(r.at for r in payment.requests)
    first_id = ids[0]
    inventory_times = sorted(r.at for r in inventory.requests if r.ce_id == first_id)
    assert sorted(payment.ids()) == sorted(ids)
    assert last_payment < inventory_times[1]
    # Exactly 4 attempts each, spaced 0.2, 0.4, 0.8 s (exponential).
    assert Counter(inventory.ids()) == Counter({i: 4 for i in ids})
    gaps = [b - a for a, b in itertools.pairwise(inventory_times)]
    for gap, want in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert want * 0.9 <= gap <= want + 0.35, gaps
    attempts = [r.headers["evroute-attempt"] for r in inventory.requests if r.ce_id == first_id]
    assert attempts == ["1", "2", "3", "4"]
    with store.store() as s:
        letters = s.dead_letters()
        assert Counter(d.route for d in letters) == {"inventory": 20, "strict": 1}
        strict = next(d for d in letters if d.route == "strict")
        assert (strict.attempts, strict.status, strict.reason) == (1, 400, "permanent failure")
        assert strict.body == b"bad order"
        inv = next(d for d in letters if d.route == "inventory")
        assert (inv.attempts, inv.status, inv.reason) == (4, 500, "retries exhausted")
        assert s.retry_summary() == {}


def test_retry_attempt_count_survives_a_restart(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    # The first answer puts its retry 1 s out (Retry-After), far past the end of the --once run
    # on a loaded machine; the later ones follow the 100 ms linear backoff.
    sink = receivers(
        lambda r: (
            Reply(503, headers={"Retry-After": "1"}) if r.headers["evroute-attempt"] == "1" else Reply(503)
        )
    )
    rs = store.routes(
        f"""
        routes:
          - name: billing
            subscriber: {sink.url}/
            delivery: {{retry: 4, backoffDelay: 100ms, backoffPolicy: linear}}
        """
    )
    [event_id] = store.publish(1)
    store.drain(rs, drain=False)  # --once: the first attempt fails, its retry is for later
    assert [r.headers["evroute-attempt"] for r in sink.requests] == ["1"]
    # A new engine resumes the count: attempts 2..5, then the dead letter (not 5 fresh attempts).
    store.drain(rs)
    assert [r.headers["evroute-attempt"] for r in sink.requests] == ["1", "2", "3", "4", "5"]
    with store.store() as s:
        [letter] = s.dead_letters()
        assert letter.attempts == 5 and letter.event.id == event_id


def test_dead_letter_replay_reaches_its_route_alone_with_a_fresh_count(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    up = {"on": False}
    flaky = receivers(lambda r: Reply(200 if up["on"] else 500))
    other = receivers()
    rs = store.routes(
        f"""
        routes:
          - {{name: flaky, subscriber: "{flaky.url}/", start: earliest, delivery: {{retry: 1, backoffDelay: 10ms}}}}
          - {{name: other, subscriber: "{other.url}/", start: earliest}}
        """
    )
    [event_id] = store.publish(1)
    store.drain(rs)
    code, out, err = store.cli("dlq", "list", "--json")
    assert code == 0, err
    [doc] = json.loads(out)
    assert (doc["route"], doc["event"]["id"], doc["attempts"]) == ("flaky", event_id, 2)
    up["on"] = True
    code, out, err = store.cli("dlq", "replay", str(doc["id"]))
    assert code == 0 and out.startswith("replayed 1 dead letter"), err
    store.drain(rs)
    assert [r.headers["evroute-attempt"] for r in flaky.requests] == ["1", "2", "1"]
    assert other.ids() == [event_id]  # the replay reached its route alone
    with store.store() as s:
        assert s.dead_letters() == []


def test_ordered_route_delivers_in_publish_order_despite_retries(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def flaky(r: Request) -> Reply:
        with lock:
            seen[r.ce_id] += 1
            n = int(r.ce_id.split("-")[-1])
            # every third event fails twice before it goes through
            return Reply(500) if n % 3 == 0 and seen[r.ce_id] <= 2 else Reply(200)

    sink = receivers(flaky)
    rs = store.routes(
        f"""
        routes:
          - name: ledger
            subscriber: {sink.url}/
            delivery: {{ordering: ordered, retry: 5, backoffDelay: 20ms}}
        """
    )
    ids = store.publish(30)
    store.drain(rs)
    # The request log never goes back to an earlier event: head-of-line until success.
    order = [ids.index(r.ce_id) for r in sink.requests]
    assert order == sorted(order)
    assert sorted(set(sink.ids())) == sorted(ids)
    assert len(sink.requests) == 30 + 2 * 10


def test_replies_reach_a_second_route_and_loops_stop_at_the_hop_limit(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    def reserve(r: Request) -> Reply:
        reply = make_event(
            type="order.reserved",
            source="/inventory",
            id="r-" + r.ce_id,
            data=b'{"ok":true}',
            datacontenttype="application/json",
        )
        headers, body = to_binary(reply)
        return Reply(200, body, headers)

    inventory = receivers(reserve)
    shipping = receivers()

    def echo(r: Request) -> Reply:
        hops = r.headers.get("ce-evroutehops", "0")
        reply = make_event(type="ping", source="/echo", id=f"echo-{hops}")
        headers, body = to_binary(reply)
        return Reply(200, body, headers)

    echoer = receivers(echo)
    rs = store.routes(
        f"""
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
          - name: shipping
            filter: {{type: order.reserved}}
            subscriber: {shipping.url}/
          - name: echo
            filter: {{type: ping}}
            subscriber: {echoer.url}/
        """
    )
    ids = store.publish(5)
    store.publish(1, type="ping")
    store.drain(rs)
    assert sorted(shipping.ids()) == sorted("r-" + i for i in ids)
    assert all(r.headers["ce-evroutehops"] == "1" for r in shipping.requests)
    # ping (no hops) -> reply hops 1 ... -> 16; the 17th reply is dropped and dead-lettered.
    assert len(echoer.requests) == 17
    with store.store() as s:
        [letter] = s.dead_letters(route="echo")
        assert letter.reason == "hop limit"


def _fails_once(receivers):  # type: ignore[no-untyped-def]
    seen: set[str] = set()

    def behaviour(r: Request) -> Reply:
        if r.ce_id in seen:
            return Reply(200)
        seen.add(r.ce_id)
        return Reply(503)

    return receivers(behaviour)


def test_a_delayed_event_keeps_every_attempt_for_real_deliveries(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    # The hold is not an attempt: with retry 1, a subscriber failing once still gets the event
    # on attempt 2 of 2, and the first request says attempt 1.
    sink = _fails_once(receivers)
    rs = store.routes(
        f"""
        routes:
          - name: billing
            subscriber: {sink.url}/
            delivery: {{retry: 1, backoffDelay: 100ms}}
        """
    )
    due = time.time() + 1.0
    store.publish(1, extensions={DELIVER_AT: rfc3339(due)})
    store.drain(rs)
    assert [r.headers["evroute-attempt"] for r in sink.requests] == ["1", "2"]
    assert sink.requests[0].at >= due - 0.05  # held until its time (the clocks are one machine's)
    with store.store() as s:
        assert s.dead_letters() == []


def test_a_delayed_event_read_only_after_its_time_counts_its_attempts_from_one(
    store: StoreCase, receivers
) -> None:  # type: ignore[no-untyped-def]
    # No worker ran while the event was held: the first read finds it due and delivers it.
    sink = _fails_once(receivers)
    rs = store.routes(
        f"""
        routes:
          - name: billing
            subscriber: {sink.url}/
            delivery: {{retry: 1, backoffDelay: 100ms}}
        """
    )
    due = time.time() + 0.3
    store.publish(1, extensions={DELIVER_AT: rfc3339(due)})
    # the publish time is the store's real clock (the server's on JetStream): wait for it to pass
    time.sleep(max(0.0, due - time.time()) + 0.05)
    store.drain(rs)
    assert [r.headers["evroute-attempt"] for r in sink.requests] == ["1", "2"]
    with store.store() as s:
        assert s.dead_letters() == []


def test_a_delayed_event_on_an_ordered_route_is_delivered_at_its_time(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = store.routes(
        f"""
        routes:
          - name: billing
            subscriber: {sink.url}/
            delivery: {{retry: 1, ordering: ordered}}
        """
    )
    due = time.time() + 1.0
    [held] = store.publish(1, extensions={DELIVER_AT: rfc3339(due)})
    [plain] = store.publish(1, start=1)
    store.drain(rs)
    got = {r.ce_id: r for r in sink.requests}
    assert sorted(got) == sorted([held, plain]) and len(sink.requests) == 2
    assert got[held].headers["evroute-attempt"] == "1" and got[held].at >= due - 0.05
