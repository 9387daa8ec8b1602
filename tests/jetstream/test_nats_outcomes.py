"""Recent delivery outcomes on JetStream (stream EVROUTE_OUTCOMES), against a real nats-server:
what a worker's commit publishes, how the stream is bounded, and that publishing them never
fails a commit."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import free_port, run_cli, wait_until

from evroute.cloudevent import make_event
from evroute.errors import InvalidInput
from evroute.store.base import RouteStart
from evroute.store.nats import names
from evroute.store.opener import Credentials, open_store, parse
from evroute.store.outcomes import RING

ROUTES = """\
routes:
  - name: pay
    subscriber: http://127.0.0.1:9/pay
    start: earliest
"""


@pytest.fixture
def store(nats_server):
    s = open_store(parse(nats_server.url), credentials=Credentials())
    s.put_routes("routes.yaml", ROUTES, None)
    yield s
    s.close()


def ev(i: int):
    return make_event(type="pay.due", source="/t", id=f"e{i}", data=b"{}")


def test_a_commit_publishes_its_outcomes_with_the_routes_broker(store):
    store.append("default", [ev(0), ev(1)])
    now = time.time()

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("pay", "default", "earliest")])
        recent = [(now, "pay", 1, 1, "delivered", 200, 3.5), (now + 1, "pay", 2, 2, "dead", 500, 7.0)]
        assert await d.commit([], now, recent) == []
        await d.leave("w1")

    asyncio.run(main())
    wait_until(lambda: store.last_outcome() == 2, 10, "two outcomes stored")
    first, second = store.recent_outcomes(0)
    assert (first.n, first.route, first.broker, first.seq, first.id, first.type) == (
        1,
        "pay",
        "default",
        1,
        "e0",
        "pay.due",
    )
    assert (first.at, first.attempt, first.outcome, first.status, first.latency_ms) == (
        now,
        1,
        "delivered",
        200,
        3.5,
    )
    assert (second.id, second.attempt, second.outcome, second.status) == ("e1", 2, "dead", 500)
    assert store.recent_outcomes(1) == [second]
    assert store.changed() == 2
    assert "outcomes" not in [b for b in store._run(_brokers)]  # not taken for a broker's stream


async def _brokers(js):
    from evroute.store.nats import streams

    return await streams.brokers(js)


def test_the_stream_keeps_the_newest_ring_of_outcomes(store):
    now = time.time()

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("pay", "default", "earliest")])
        recent = [(now, "pay", i, 1, "delivered", 200, 1.0) for i in range(1, RING + 51)]
        await d.commit([], now, recent[:60])
        await d.commit([], now, recent[60:])
        await d.leave("w1")

    asyncio.run(main())
    wait_until(lambda: store.last_outcome() == RING + 50, 20, "every outcome published")

    async def info(js):
        return await js.stream_info(names.OUTCOMES_STREAM)

    state = store._run(info).state
    assert (state.messages, state.first_seq) == (RING, 51)
    oldest = store.recent_outcomes(0, limit=1)
    assert [o.n for o in oldest] == [51]  # the first 50 aged out: a follower sees the gap
    assert oldest[0].id is None  # no such event in the broker's stream


def test_a_commit_whose_outcomes_cannot_be_published_still_commits(store, caplog):
    now = time.time()

    async def main():
        d = store.deliveries()
        await d.attach([RouteStart("pay", "default", "earliest")])
        await d.nc.close()  # the connection is gone: the publish fails
        moved = await d.commit([], now, [(now, "pay", 1, 1, "delivered", 200, 1.0)])
        await d.commit([], now, [(now, "pay", 2, 1, "delivered", 200, 1.0)])
        d.nc = d.js = None
        return moved

    assert asyncio.run(main()) == []
    warned = [r.message for r in caplog.records if "recent outcomes" in r.message]
    assert len(warned) == 1  # said once, not per commit
    assert store.last_outcome() == 0


def test_a_broker_named_like_an_own_stream_is_refused(store):
    for broker in ("outcomes", "dlq"):
        with pytest.raises(InvalidInput, match=f"broker '{broker}' is reserved"):
            store.append(broker, [ev(0)])


def test_ui_and_tail_on_a_server_that_does_not_answer_are_one_error_line(tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"
    routes = str(tmp_path / "routes.yaml")
    for args in (("ui", "--listen", f"127.0.0.1:{free_port()}"), ("tail",)):
        code, out, err = run_cli("--store", url, "--routes", routes, *args)
        assert code == 1, (args, out, err)
        [line] = err.strip().splitlines()
        assert line.startswith("Error: ") and "127.0.0.1" in line
        assert "evroute console on" not in out
