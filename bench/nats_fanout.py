"""Fan-out throughput on NATS JetStream: 2 routes over the same backlog, one evroute engine on
the JetStream store against a hand-built nats-py relay, same server, same receiver, same run.

The relay is what a user would write instead of evroute: per route a durable pull consumer,
fetch 256 at a time -> POST each (binary mode) at concurrency 32 -> ack. Each side gets its own
stream contents (the relay's on subject `relay.orders`), so neither reads the other's.

    python bench/nats_fanout.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import aiohttp

from evroute.cloudevent import from_json, to_binary, to_json

from bench._common import ReceiverProcess, row, table
from bench.deliver import CONCURRENCY, make_events


async def relay(url: str, target: str, events: list[Any]) -> float:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="RELAY", subjects=["relay.orders"], storage=StorageType.FILE))
    for i in range(0, len(events), 1000):
        futures = [await js.publish_async("relay.orders", to_json(e)) for e in events[i : i + 1000]]
        await asyncio.gather(*futures)
    groups = ["inventory", "payment"]
    for g in groups:
        await js.add_consumer(
            "RELAY", ConsumerConfig(durable_name=g, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1024)
        )
    total = len(events) * len(groups)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def consume(group: str) -> None:
            sub = await js.pull_subscribe_bind(group, "RELAY")
            sem = asyncio.Semaphore(CONCURRENCY)
            done = 0

            async def post(msg: Any) -> None:
                headers, body = to_binary(from_json(msg.data))
                try:
                    async with session.post(target, data=body, headers=headers) as resp:
                        await resp.read()
                    await msg.ack()
                finally:
                    sem.release()

            tasks: set[asyncio.Task[None]] = set()
            while done < len(events):
                try:
                    batch = await sub.fetch(256, timeout=1)
                except TimeoutError:
                    continue
                for msg in batch:
                    await sem.acquire()
                    t = asyncio.create_task(post(msg))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    done += 1
            await asyncio.gather(*tasks)

        await asyncio.gather(*(consume(g) for g in groups))
    elapsed = time.perf_counter() - start
    await nc.close()
    return total / elapsed


def evroute_on_nats(url: str, target: str, events: list[Any]) -> float:
    from evroute.routes.load import load_routes_text
    from evroute.store.base import starts
    from evroute.store.opener import open_store, parse
    from evroute.worker.engine import Engine

    text = "routes:\n" + "".join(
        f"  - {{name: {n}, subscriber: '{target}', start: earliest, delivery: {{concurrency: {CONCURRENCY}}}}}\n"
        for n in ("inventory", "payment")
    )
    rs = load_routes_text(text, "routes.yaml")
    with open_store(parse(url)) as store:
        store.put_routes("routes.yaml", text, None)
        store.ensure_routes(starts(rs.routes))
        for i in range(0, len(events), 1000):
            store.append("default", events[i : i + 1000])

    async def main() -> float:
        store = open_store(parse(url))
        engine = Engine(store, rs)
        start = time.perf_counter()
        await engine.start()
        await engine.run_until_idle(drain=True)
        elapsed = time.perf_counter() - start
        await engine.stop()
        await engine.deliveries.close()
        pending = sum(c.position for c in store.cursors().values())
        store.close()
        assert pending == 2 * len(events), pending
        return 2 * len(events) / elapsed

    return asyncio.run(main())


def run(events: int = 20_000) -> list[dict[str, Any]]:
    from natsserver import NatsServer

    evs = make_events(events)
    server = NatsServer(Path(tempfile.mkdtemp(prefix="evroute-nats-bench-")) / "store").start()
    try:
        with ReceiverProcess() as receiver:
            ref = asyncio.run(relay(server.url, receiver.url, evs))
            assert server.proc is not None
            cpu0, wall0 = _cpu(server.proc.pid), time.perf_counter()
            ours = evroute_on_nats(server.url, receiver.url, evs)
            server_cpu = _cpu(server.proc.pid) - cpu0
            wall = time.perf_counter() - wall0
    finally:
        server.kill()
    deliveries = 2 * len(evs)
    # the per-event cost on the server side (publish, store, deliver, ack), for the paper estimate
    print(
        f"nats-server CPU during the evroute run (publish + deliveries): {server_cpu:.2f} s for "
        f"{len(evs)} events and {deliveries} deliveries = {server_cpu / deliveries * 1e6:.0f} us per delivery "
        f"({wall:.1f} s wall)"
    )
    return [row("fan-out on NATS, 2 routes, 1 worker", ours, ref, "ev/s", ">= 0.8", ours / ref >= 0.8)]


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
