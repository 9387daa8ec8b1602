"""The delivery engine in-process, against real loopback HTTP receivers and a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest
from helpers import json_event

from evroute.cloudevent import make_event, to_binary
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters, retries
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Receiver, Reply, Request


def routes_of(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes_text(path.read_text(), str(path))


def prepare(db: str, routeset) -> None:  # type: ignore[no-untyped-def]
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])


def publish(
    db: str, n: int, type: str = "order.placed", broker: str = "default", start: int = 0
) -> list[str]:
    events = [json_event(type, f"{type}-{i}", {"order": i}) for i in range(start, start + n)]
    with Store(db) as store:
        event_log.append(store, broker, events)
    return [e.id for e in events]


def drain(db: str, routeset, timeout: float = 60.0, drain: bool = True, metrics=None) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = Store(db)
        engine = Engine(store, routeset, once=not drain, metrics=metrics)
        await engine.start()
        try:
            await engine.run_until_idle(drain)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), timeout))


@pytest.fixture
def receivers():  # type: ignore[no-untyped-def]
    started: list[Receiver] = []

    def make(behaviour=None) -> Receiver:  # type: ignore[no-untyped-def]
        r = Receiver(behaviour).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def test_order_fan_out_reaches_both_services_exactly_once(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    inventory, payment = receivers(), receivers()
    rs = routes_of(
        tmp_path,
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
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 100)
    publish(db, 10, type="order.cancelled")
    drain(db, rs)
    assert Counter(inventory.ids()) == Counter({i: 1 for i in ids})
    assert Counter(payment.ids()) == Counter({i: 1 for i in ids})
    req = inventory.requests[0]
    assert req.headers["ce-type"] == "order.placed"
    assert req.headers["ce-source"] == "/shop"
    assert req.headers["evroute-attempt"] == "1"
    assert req.headers["prefer"] == "reply"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.body) == {"order": int(req.ce_id.split("-")[-1])}
    with Store(db) as store:
        assert cursors.get(store, "inventory").position == cursors.get(store, "payment").position  # type: ignore[union-attr]
        assert cursors.get(store, "inventory").delivered == 100  # type: ignore[union-attr]


def test_failing_route_does_not_delay_the_other_and_dead_letters_after_retries(
    tmp_path: Path, receivers
) -> None:  # type: ignore[no-untyped-def]
    inventory = receivers(lambda r: Reply(500, b"inventory down"))
    payment = receivers()
    rs = routes_of(
        tmp_path,
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
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 20)
    publish(db, 1, type="order.refused")
    drain(db, rs)
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
    with Store(db) as store:
        letters = deadletters.listing(store)
        by_route = Counter(d.route for d in letters)
        assert by_route == {"inventory": 20, "strict": 1}
        strict = next(d for d in letters if d.route == "strict")
        assert (strict.attempts, strict.status, strict.reason) == (1, 400, "permanent failure")
        assert strict.body == b"bad order"
        inv = next(d for d in letters if d.route == "inventory")
        assert (inv.attempts, inv.status, inv.reason) == (4, 500, "retries exhausted")
        assert retries.count(store) == 0


def test_retry_schedule_survives_a_restart(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    failing = {"on": True}
    sink = receivers(lambda r: Reply(503 if failing["on"] else 200))
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: billing
            subscriber: {sink.url}/
            delivery: {{retry: 4, backoffDelay: 100ms, backoffPolicy: linear}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    drain(db, rs, drain=False)  # --once: first attempt fails, retry scheduled for later
    with Store(db) as store:
        [row] = retries.due(store, 1e12, ["billing"])
        assert row.attempt == 1
    # A new engine resumes the count: attempts 2..5, then the dead letter (not 5 fresh attempts).
    drain(db, rs)
    assert [r.headers["evroute-attempt"] for r in sink.requests] == ["1", "2", "3", "4", "5"]
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert letter.attempts == 5 and letter.event.id == event_id


def test_ordered_route_delivers_in_publish_order_despite_retries(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def flaky(r: Request) -> Reply:
        with lock:
            seen[r.ce_id] += 1
            n = int(r.ce_id.split("-")[-1])
            # every third event fails twice before it goes through
            return Reply(500) if n % 3 == 0 and seen[r.ce_id] <= 2 else Reply(200)

    sink = receivers(flaky)
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: ledger
            subscriber: {sink.url}/
            delivery: {{ordering: ordered, retry: 5, backoffDelay: 20ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 30)
    drain(db, rs)
    # The request log never goes back to an earlier event: head-of-line until success.
    order = [ids.index(r.ce_id) for r in sink.requests]
    assert order == sorted(order)
    assert sorted(set(sink.ids())) == sorted(ids)
    assert len(sink.requests) == 30 + 2 * 10


def test_replies_reach_a_second_route_and_loops_stop_at_the_hop_limit(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
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
    rs = routes_of(
        tmp_path,
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
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 5)
    publish(db, 1, type="ping")
    drain(db, rs)
    assert sorted(shipping.ids()) == sorted("r-" + i for i in ids)
    assert all(r.headers["ce-evroutehops"] == "1" for r in shipping.requests)
    # ping (no hops) -> reply hops 1 ... -> 16; the 17th reply is dropped and dead-lettered.
    assert len(echoer.requests) == 17
    with Store(db) as store:
        [letter] = deadletters.listing(store, route="echo")
        assert letter.reason == "hop limit"


def test_command_subscriber_receives_every_event(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    script = tmp_path / "handler.py"
    script.write_text(
        "import json, os, sys\n"
        "event = json.load(sys.stdin)\n"
        f"open({str(out)!r}, 'a').write(event['id'] + ' ' + os.environ['EVROUTE_ATTEMPT'] + '\\n')\n"
    )
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: audit
            subscriber: {{command: [{sys.executable}, handler.py]}}
            delivery: {{concurrency: 4}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 12)
    drain(db, rs)
    lines = out.read_text().split()
    assert sorted(lines[0::2]) == sorted(ids)
    assert set(lines[1::2]) == {"1"}


def test_an_outcome_that_cannot_be_stored_keeps_the_event_behind_the_cursor(
    tmp_path: Path, receivers
) -> None:  # type: ignore[no-untyped-def]
    sink = receivers(lambda r: Reply(400, b"rejected"))
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: strict
            subscriber: {sink.url}/
            delivery: {{retry: 0}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    with Store(db) as store:
        # A real write failure: SQLite refuses every dead letter until the trigger is dropped.
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            while not sink.requests:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            engine.commit()
            assert cursors.get(store, "strict").position == 0  # type: ignore[union-attr]
            assert deadletters.listing(store) == []
            store.conn.execute("DROP TRIGGER refuse")
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert letter.event.id == event_id and letter.status == 400
        assert cursors.get(store, "strict").position == event_log.last_seq(store)  # type: ignore[union-attr]


def test_reply_over_max_event_bytes_is_dead_lettered_not_dropped(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    def huge(r: Request) -> Reply:
        headers, body = to_binary(
            make_event(type="order.reserved", source="/inv", id="r-" + r.ce_id, data=b"z" * 5000)
        )
        return Reply(200, body, headers)

    inventory = receivers(huge)
    rs = routes_of(
        tmp_path,
        f"""
        settings: {{maxEventBytes: 4096}}
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
            delivery: {{retry: 3, backoffDelay: 10ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 2)
    drain(db, rs)
    assert len(inventory.requests) == 2  # permanent: not retried
    with Store(db) as store:
        letters = deadletters.listing(store, route="inventory")
        assert len(letters) == 2
        for letter in letters:
            assert letter.reason == "permanent failure"
            assert letter.error is not None and letter.error.startswith("invalid reply: event is ")
            assert letter.error.endswith(" bytes, over maxEventBytes 4096")
        assert [e.event.id for e in event_log.read_after(store, "default", 0, limit=100)] == [
            "order.placed-0",
            "order.placed-1",
        ]
        assert cursors.get(store, "inventory").delivered == 0  # type: ignore[union-attr]


def test_a_duplicate_reply_is_not_counted_as_published(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    from evroute.worker.metrics import Metrics

    def same(_r: Request) -> Reply:
        headers, body = to_binary(make_event(type="order.reserved", source="/inv", id="always-the-same"))
        return Reply(200, body, headers)

    inventory = receivers(same)
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
            delivery: {{concurrency: 1}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 3)
    metrics = Metrics()
    drain(db, rs, metrics=metrics)
    assert len(inventory.requests) == 3
    text = metrics.render()[0].decode()
    assert 'evroute_events_published_total{broker="default"} 1.0' in text
    with Store(db) as store:
        replies = [
            e
            for e in event_log.read_after(store, "default", 0, limit=100)
            if e.event.type == "order.reserved"
        ]
        assert len(replies) == 1
