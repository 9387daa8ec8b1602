"""The JetStream store behind the seam, against a real nats-server: the command half and the
worker half, operation by operation."""

from __future__ import annotations

import asyncio
import time

import pytest

from evroute.cloudevent import make_event
from evroute.errors import InvalidInput, NotFound, StoreError
from evroute.store.base import NewDeadLetter, Progress, Retry, RouteStart
from evroute.store.opener import Credentials, open_store, parse

ROUTES = """\
settings:
  nats: {duplicateWindow: 1m}
routes:
  - name: inv
    subscriber: http://127.0.0.1:9/inv
    delivery: {timeout: PT2S, concurrency: 4}
  - name: pay
    subscriber: http://127.0.0.1:9/pay
    delivery: {ordering: ordered}
    start: earliest
  - name: seq
    subscriber: http://127.0.0.1:9/seq
    delivery: {ordering: ordered, timeout: 100ms}
    start: earliest
"""


def ev(i: int, type: str = "t.x"):
    return make_event(type=type, source="/t", id=f"e{i}", data=b'{"i": %d}' % i)


@pytest.fixture
def store(nats_server):
    s = open_store(parse(nats_server.url), credentials=Credentials())
    yield s
    s.close()


def test_an_unreachable_server_is_one_error_naming_the_address():
    from natsserver import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    s = open_store(parse(url))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach NATS at {url}"):
        s.append("default", [ev(1)])
    assert time.monotonic() - t0 < 10
    s.close()


def test_publish_dedup_listing_and_lookup(store):
    first = store.append("default", [ev(1)])
    assert (first.stored, first.duplicates, first.seqs) == (1, 0, (1,))
    assert store.append("default", [ev(1)]).duplicates == 1
    many = store.append_all("orders", [[ev(i, "o.placed") for i in range(10)], [ev(10, "o.paid")]])
    assert (many.stored, many.duplicates) == (11, 0)
    listed = store.events(limit=5)
    assert len(listed) == 5 and [e.event.id for e in listed][-1] == "e10"
    assert [e.event.id for e in store.events(broker="orders", type="o.paid")] == ["e10"]
    assert store.event(1).event.id == "e1" and store.event(1).broker == "default"
    assert [(e.broker, e.seq) for e in store.find("e3")] == [("orders", 4)]
    assert store.event(999) is None


def test_routes_live_in_kv_with_compare_and_set(store):
    assert store.routes("routes.yaml") is None
    rev = store.put_routes("routes.yaml", ROUTES, 0)
    doc = store.routes("anything.yaml")
    assert doc.text == ROUTES and doc.revision == rev
    rev2 = store.put_routes("routes.yaml", ROUTES + "\n", rev)
    with pytest.raises(InvalidInput, match="changed meanwhile"):
        store.put_routes("routes.yaml", ROUTES, rev)  # a stale revision is refused, never lost
    assert store.routes("x").revision == rev2


def test_consumers_follow_the_routes_in_kv_and_reset_recreates(store):
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(3)])
    created = store.ensure_routes(
        [RouteStart("inv", "default", "latest"), RouteStart("pay", "default", "earliest")]
    )
    assert created == ["inv", "pay"]
    assert store.ensure_routes([RouteStart("inv", "default", "latest")]) == []
    info = store._run(lambda js: js.consumer_info("EVROUTE_DEFAULT", "evroute-pay"))
    assert info.config.max_ack_pending == 1 and info.config.ack_wait == 32.0
    info = store._run(lambda js: js.consumer_info("EVROUTE_DEFAULT", "evroute-inv"))
    assert info.config.max_ack_pending == 4 and info.config.ack_wait == 4.0
    assert info.config.opt_start_seq == 4  # latest: after what was there when it was applied
    stream = store._run(lambda js: js.stream_info("EVROUTE_DEFAULT"))
    assert stream.config.duplicate_window == 60
    cursors = store.cursors()
    assert set(cursors) == {"inv", "pay"} and cursors["pay"].position == 0
    assert store.lag("default", 0) == 3
    epoch = cursors["inv"].epoch
    time.sleep(0.01)
    assert store.reset("inv", "earliest") == 0
    assert store.cursor("inv").epoch != epoch
    assert store.reset("inv", "2") == 1
    with pytest.raises(NotFound):
        store.reset("nope", "earliest")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _read(d, route, want, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += await d.read(route, "default", 0, want - len(got))
    return got


def test_worker_half_settles_by_ack_nak_and_term(store):
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(3)])

    async def main():
        d = store.deliveries()
        cursors = await d.attach([RouteStart("pay", "default", "earliest")])
        assert cursors["pay"].position == 0
        [a] = await _read(d, "pay", 1)
        assert (a.seq, a.attempt, a.event.id) == (1, 1, "e0")
        await d.succeeded("pay", a.seq, a.token, scheduled=False, dlq_id=None)
        [b] = await _read(d, "pay", 1)
        letter = NewDeadLetter(
            "pay",
            "default",
            b.seq,
            b.event,
            1,
            400,
            "permanent",
            "400 Bad Request",
            b"nope",
            time.time(),
            time.time(),
        )
        dlq_id = await d.dead_letter(letter, b.token, None)
        await d.dls_outcome(dlq_id, "delivered")
        [c] = await _read(d, "pay", 1)
        assert c.seq == 3
        await d.succeeded("pay", c.seq, c.token, scheduled=False, dlq_id=None)
        await d.commit([], time.time())
        await asyncio.sleep(0.2)
        assert await d.waiting(["pay"]) == 0
        await d.leave("w1")
        return dlq_id

    dlq_id = run(main())
    [dead] = store.dead_letters()
    assert (dead.id, dead.route, dead.seq, dead.status, dead.body, dead.dls_outcome) == (
        dlq_id,
        "pay",
        2,
        400,
        b"nope",
        "delivered",
    )
    assert dead.event.id == "e1" and store.dead_letter_counts() == {"pay": 1}
    assert store.dead_letter(dlq_id).error == "400 Bad Request"
    assert store.cursor("pay").position == 3


def test_an_unordered_retry_is_a_nak_with_the_delay(store):
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(3)])

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("inv", "default", "earliest")])
        got = await _read(d, "inv", 3)
        due = time.time() + 0.3
        await d.retry(Retry("inv", 1, 1, due, time.time(), 503, "503", None), got[0].token)
        for other in got[1:]:
            await d.succeeded("inv", other.seq, other.token, scheduled=False, dlq_id=None)
        assert await d.waiting(["inv"]) >= 1
        [again] = await _read(d, "inv", 1)
        assert (again.seq, again.attempt) == (1, 2) and time.time() >= due - 0.05
        await d.succeeded("inv", again.seq, again.token, scheduled=True, dlq_id=None)
        await asyncio.sleep(0.2)
        assert await d.waiting(["inv"]) == 0
        await d.close()

    run(main())


def test_an_ordered_head_retried_in_place_is_kept_then_handed_back(store):
    """The dispatcher retries an ordered head itself: no other worker may get it meanwhile,
    even past AckWait (2.1 s here); a worker that stops hands it back with a NAK."""
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(2)])

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("seq", "default", "earliest")])
        [head] = await _read(d, "seq", 1)
        other = store.deliveries()
        await other.attach([RouteStart("seq", "default", "earliest")])
        await d.retry(Retry("seq", 1, 1, time.time() + 0.5, time.time(), 503, "503", None), head.token)
        assert await _read(other, "seq", 1, timeout=3.0) == []  # kept: nobody else, nothing after it
        await d.close()  # stopping with the retry pending: the server takes the schedule over
        [back] = await _read(other, "seq", 1)
        assert (back.seq, back.attempt) == (1, 2)
        await other.succeeded("seq", back.seq, back.token, scheduled=True, dlq_id=None)
        [nxt] = await _read(other, "seq", 1)
        assert nxt.seq == 2
        await other.close()

    run(main())


def test_replay_reaches_only_its_route_with_a_fresh_count(store):
    store.put_routes("routes.yaml", ROUTES, None)
    store.ensure_routes([RouteStart("inv", "default", "latest"), RouteStart("pay", "default", "earliest")])
    store.append("default", [ev(1)])

    async def dead_letter_it():
        d = store.deliveries()
        await d.attach([RouteStart("pay", "default", "earliest"), RouteStart("inv", "default", "latest")])
        for route in ("pay", "inv"):
            [m] = await _read(d, route, 1)
            if route == "pay":
                await d.dead_letter(
                    NewDeadLetter(
                        "pay",
                        "default",
                        m.seq,
                        m.event,
                        2,
                        500,
                        "exhausted",
                        "x",
                        None,
                        time.time(),
                        time.time(),
                    ),
                    m.token,
                    None,
                )
            else:
                await d.succeeded(route, m.seq, m.token, scheduled=False, dlq_id=None)
        await d.close()

    run(dead_letter_it())
    [dead] = store.dead_letters(route="pay")
    assert store.replay([dead.id]) == 1
    assert store.dead_letter(dead.id).replayed_at is not None

    async def deliver_replay():
        d = store.deliveries()
        await d.attach([RouteStart("pay", "default", "earliest"), RouteStart("inv", "default", "latest")])
        [m] = await _read(d, "pay", 1)
        assert (m.event.id, m.attempt) == ("e1", 1)
        assert await d.read("inv", "default", 0, 10) == []  # the other route does not see it
        await d.succeeded("pay", m.seq, m.token, scheduled=False, dlq_id=None)
        await d.close()

    run(deliver_replay())
    assert store.dead_letters() == []
    assert [e.event.id for e in store.events()] == ["e1"]  # the replay copy is not a new event


def test_purge_and_workers(store):
    store.put_routes("routes.yaml", ROUTES, None)

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("inv", "default", "latest")])
        for i in range(3):
            await d.dead_letter(
                NewDeadLetter(
                    "inv", "default", None, ev(i), 1, None, "permanent", "x", None, None, 1000.0 + i
                ),
                None,
                None,
            )
        await d.join("host:1:a", time.time())
        await d.commit(
            [
                __import__("evroute.store.base", fromlist=["Progress"]).Progress(
                    "inv", 0, 0, delivered=5, failed=2, last_error="boom", last_error_at=time.time()
                )
            ],
            time.time(),
        )
        await d.beat("host:1:a", time.time(), {"delivered": 5, "failed": 2})
        await d.close()

    run(main())
    [w] = store.workers(time.time())
    assert w.holder == "host:1:a" and w.counters == {"delivered": 5, "failed": 2}
    c = store.cursor("inv")
    assert (c.delivered, c.failed, c.last_error) == (5, 2, "boom")
    assert store.purge(before=1001.5) == 2
    assert [d.event.id for d in store.dead_letters()] == ["e2"]
    assert store.purge(route="inv") == 1
    assert store.workers(time.time() + 60) == []


def test_a_commit_acks_the_events_it_covers_that_were_finished_without_a_call(store):
    """Filtered-out events are finished by the watermark alone: the commit acks them."""
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(4)])

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("inv", "default", "earliest")])
        got = await _read(d, "inv", 4)
        assert [g.seq for g in got] == [1, 2, 3, 4]
        await d.succeeded("inv", 2, got[1].token, scheduled=False, dlq_id=None)
        # 1 and 3 were filtered out; 4 is still in flight, so the watermark is 3
        await d.commit([Progress("inv", 3, 0)], time.time())
        await asyncio.sleep(0.2)
        assert store.cursor("inv").position == 3
        assert await d.waiting(["inv"]) == 1
        await d.succeeded("inv", 4, got[3].token, scheduled=False, dlq_id=None)
        await asyncio.sleep(0.2)
        assert await d.waiting(["inv"]) == 0
        await d.close()

    run(main())


def test_a_reset_with_retries_waiting_needs_drop_retries(store):
    """The consumer holds the retries (NAK'd messages): recreating it drops them, so a reset
    says so and changes nothing unless asked to drop them."""
    store.put_routes("routes.yaml", ROUTES, None)
    store.append("default", [ev(i) for i in range(2)])

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("inv", "default", "earliest")])
        got = await _read(d, "inv", 2)
        await d.retry(Retry("inv", 1, 1, time.time() + 60, time.time(), 503, "503", None), got[0].token)
        await d.succeeded("inv", got[1].seq, got[1].token, scheduled=False, dlq_id=None)
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(store.scheduled, "inv") == 1
        epoch = store.cursor("inv").epoch
        with pytest.raises(InvalidInput, match="drops its 1 scheduled retry: add --drop-retries"):
            await asyncio.to_thread(store.reset, "inv", "latest")
        assert store.cursor("inv").epoch == epoch and store.scheduled("inv") == 1
        assert await asyncio.to_thread(store.reset, "inv", "latest", drop_retries=True) == 2
        assert store.scheduled("inv") == 0
        await d.close()

    run(main())


def test_watch_wakes_the_worker_when_a_route_has_something_to_read(store):
    store.put_routes("routes.yaml", ROUTES, None)

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("inv", "default", "latest")])
        woken = asyncio.Event()
        watcher = asyncio.ensure_future(d.watch(woken.set))
        assert await d.read("inv", "default", 0, 10) == []  # a pull request now waits on the server
        woken.clear()
        await asyncio.to_thread(store.append, "default", [ev(1)])
        await asyncio.wait_for(woken.wait(), 1.0)
        [got] = await d.read("inv", "default", 0, 10)
        assert got.event.id == "e1"
        watcher.cancel()
        await d.close()

    run(main())
