"""Fan-out throughput: 2 routes over the same 20k backlog, `evroute worker --drain` (steady
state, as bench/deliver.py measures it) against two Redis Streams -> aiohttp relays with two
consumer groups, same receiver, same run:

- the strong relay (bench/relay.py, the goal's reference): one process per consumer group,
  XREADGROUP 256, 32 POSTs in flight, one XACK every 5 ms for everything acknowledged since;
- the simple relay (below): both groups in one process, one XACK per message.

    python bench/fanout.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import uvloop

from evroute.cloudevent import to_binary, to_json

from bench._common import ReceiverProcess, row, table
from bench.deliver import CONCURRENCY, evroute_engine, make_events
from bench.relay import RedisServer, RelayProcess


def load_stream(redis_port: int, events: list[Any], groups: list[str]) -> None:
    import redis

    r = redis.Redis(port=redis_port)
    r.delete("orders")
    pipe = r.pipeline(transaction=False)
    for e in events:
        pipe.xadd("orders", {"event": to_json(e)})
    pipe.execute()
    for g in groups:
        r.xgroup_create("orders", g, id="0")
    r.close()


def strong_relay(redis_port: int, url: str, events: list[Any]) -> float:
    """Total deliveries/s of one relay process per consumer group, started together."""
    groups = ["inventory", "payment"]
    load_stream(redis_port, events, groups)
    relays = [RelayProcess(redis_port, g, url, len(events)) for g in groups]
    try:
        start = time.time()
        for p in relays:
            p.go()
        finished = max(p.finished_at() for p in relays)
    finally:
        for p in relays:
            p.stop()
    return len(events) * len(groups) / (finished - start)


async def relay(redis_port: int, url: str, events: list[Any]) -> float:
    """The simple relay: both consumer groups in this process, one XACK per message."""
    import redis.asyncio as aioredis

    groups = ["inventory", "payment"]
    load_stream(redis_port, events, groups)
    r = aioredis.Redis(port=redis_port)
    total = len(events) * len(groups)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def consume(group: str) -> None:
            sem = asyncio.Semaphore(CONCURRENCY)
            done = 0

            async def post(msg_id: bytes, payload: bytes) -> None:
                from evroute.cloudevent import from_json

                headers, body = to_binary(from_json(payload))
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                    await r.xack("orders", group, msg_id)
                finally:
                    sem.release()

            tasks: set[asyncio.Task[None]] = set()
            while done < len(events):
                batch = await r.xreadgroup(group, "c1", {"orders": ">"}, count=256, block=1000)
                for _stream, messages in batch:
                    for msg_id, fields in messages:
                        await sem.acquire()
                        t = asyncio.create_task(post(msg_id, fields[b"event"]))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                        done += 1
            await asyncio.gather(*tasks)

        await asyncio.gather(*(consume(g) for g in groups))
    elapsed = time.perf_counter() - start
    await r.aclose()
    return total / elapsed


def run(events: int = 20_000) -> list[dict[str, Any]]:
    evs = make_events(events)
    with RedisServer() as server, ReceiverProcess() as receiver:
        strong = strong_relay(server.port, receiver.url, evs)
        simple = uvloop.run(relay(server.port, receiver.url, evs))
        ours = evroute_engine(receiver.url, evs, 2)
    print(
        f"fan-out: evroute {ours:,.0f}, strong relay {strong:,.0f}, simple relay {simple:,.0f} deliveries/s",
        file=sys.stderr,
    )
    return [
        row(
            "fan-out, 2 routes (total) vs strong relay", ours, strong, "ev/s", ">= 1.0", ours / strong >= 1.0
        ),
        {**row("fan-out, 2 routes vs simple relay", ours, simple, "ev/s", "info", True), "goal": "info"},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
