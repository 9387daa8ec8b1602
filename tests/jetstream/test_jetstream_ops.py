"""The JetStream operations one by one, against a real nats-server (never a mock)."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from evroute.cloudevent import make_event
from evroute.store.nats import consumers, names, streams, wire
from evroute.store.nats.consumers import ConsumerSpec, Puller
from evroute.store.nats.streams import StreamSettings


def ev(i: int, source: str = "/t"):
    return make_event(type="t.x", source=source, id=f"e{i}", data=b'{"i": %d}' % i)


async def _conn(url: str):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await streams.ensure_stream(js, "default", StreamSettings())
    return nc, js


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_stream_per_broker_with_the_section_10_config(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        await streams.ensure_stream(js, "order-events", StreamSettings(duplicate_window=60))
        info = await js.stream_info("EVROUTE_ORDER_EVENTS")
        assert info.config.subjects == ["evroute.order-events", "evroute.replay.order-events.*"]
        assert info.config.storage == "file"
        assert info.config.num_replicas == 1
        assert info.config.max_age == 7 * 86400
        assert info.config.duplicate_window == 60
        # again, with other settings: updated in place
        await streams.ensure_stream(js, "order-events", StreamSettings(max_age=3600))
        info = await js.stream_info("EVROUTE_ORDER_EVENTS")
        assert info.config.max_age == 3600
        assert await streams.brokers(js) == ["default", "order-events"]
        await nc.close()

    run(main())


def test_append_dedups_on_source_and_id_within_the_window(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        one = await streams.append(js, "default", [ev(1)])
        assert (one.stored, one.duplicates, one.seqs) == (1, 0, (1,))
        again = await streams.append(js, "default", [ev(1)])
        assert (again.stored, again.duplicates, again.seqs) == (0, 1, (None,))
        other_source = await streams.append(js, "default", [ev(1, source="/u")])
        assert other_source.stored == 1
        many = await streams.append(js, "default", [ev(i) for i in range(500)])
        assert (many.stored, many.duplicates) == (499, 1)
        assert await streams.last_seq(js, "default") == 501
        await nc.close()

    run(main())


def test_the_wire_is_the_structured_cloudevents_binding(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        await streams.append(js, "default", [ev(7)])
        raw = await js.get_msg("EVROUTE_DEFAULT", 1)
        assert raw.headers["Content-Type"] == "application/cloudevents+json"
        assert raw.headers["Nats-Msg-Id"] == wire.msg_id(ev(7))
        import json

        body = json.loads(raw.data)
        assert body["id"] == "e7" and body["data"] == {"i": 7} and body["specversion"] == "1.0"
        listed = await streams.scan(js, "default", True, 10, lambda e: True)
        assert [e.event.id for e in listed] == ["e7"]
        await nc.close()

    run(main())


def test_binary_mode_messages_are_read_too():
    event = wire.decode(
        b"hello",
        {
            "ce-specversion": "1.0",
            "ce-id": "b1",
            "ce-source": "/s",
            "ce-type": "t",
            "Content-Type": "text/plain",
        },
    )
    assert (event.id, event.data, event.datacontenttype) == ("b1", b"hello", "text/plain")


async def _pull_all(puller: Puller, want: int, timeout: float = 10) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += await puller.next(want - len(got), 0.5)
    return got


def test_start_latest_sees_only_events_after_the_route_was_applied(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        await streams.append(js, "default", [ev(i) for i in range(3)])
        await consumers.ensure(js, ConsumerSpec("late", "default"), "latest")
        await consumers.ensure(js, ConsumerSpec("all", "default"), "earliest")
        await streams.append(js, "default", [ev(i) for i in range(3, 5)])
        late, everything = Puller(nc, "late", "default"), Puller(nc, "all", "default")
        await late.start()
        await everything.start()
        assert [consumers.stream_seq(m) for m in await _pull_all(late, 2)] == [4, 5]
        assert [consumers.stream_seq(m) for m in await _pull_all(everything, 5)] == [1, 2, 3, 4, 5]
        assert await late.next(5, 0.2) == []
        info = await consumers.info(js, "late", "default")
        assert info.config.max_ack_pending == 32 and info.config.ack_wait == 32.0
        await nc.close()

    run(main())


def test_nak_with_delay_redelivers_with_the_next_attempt_and_ordered_holds_the_head(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        await consumers.ensure(js, ConsumerSpec("o", "default", ordered=True, timeout=5), "latest")
        await streams.append(js, "default", [ev(i) for i in range(3)])
        p = Puller(nc, "o", "default")
        await p.start()
        [head] = await p.next(10, 2)
        assert consumers.attempt(head) == 1 and consumers.stream_seq(head) == 1
        t0 = time.monotonic()
        await consumers.nak(head, 0.5)
        # MaxAckPending 1: nothing else comes out while the head waits for its retry
        [again] = await _pull_all(p, 1)
        assert time.monotonic() - t0 >= 0.45
        assert consumers.stream_seq(again) == 1 and consumers.attempt(again) == 2
        await consumers.ack(again)
        nxt = await _pull_all(p, 1)
        assert [consumers.stream_seq(m) for m in nxt] == [2]
        await nc.close()

    run(main())


def test_term_stops_redelivery_and_reset_recreates_the_consumer(nats_server):
    async def main():
        nc, js = await _conn(nats_server.url)
        spec = ConsumerSpec("r", "default")
        await consumers.ensure(js, spec, "earliest")
        await streams.append(js, "default", [ev(i) for i in range(4)])
        p = Puller(nc, "r", "default")
        await p.start()
        msgs = await _pull_all(p, 4)
        await consumers.term(msgs[0])
        for m in msgs[1:]:
            await consumers.ack(m)
        await asyncio.sleep(0)
        assert await p.next(4, 0.3) == []
        assert await consumers.recreate(js, spec, "2") == 1
        assert [consumers.stream_seq(m) for m in await _pull_all(p, 3)] == [2, 3, 4]
        assert await consumers.recreate(js, spec, "latest") == 4
        assert await p.next(4, 0.3) == []
        assert await consumers.recreate(js, spec, "earliest") == 0
        assert len(await _pull_all(p, 4)) == 4
        with pytest.raises(Exception, match="no consumer"):
            await consumers.recreate(js, ConsumerSpec("nope", "default"), "earliest")
        await nc.close()

    run(main())


def test_names_follow_the_mapping():
    assert names.stream("order-events") == "EVROUTE_ORDER_EVENTS"
    assert names.subject("b") == "evroute.b" and names.consumer("inv") == "evroute-inv"
    assert names.dlq_subject("inv") == "evroute.dlq.inv"
