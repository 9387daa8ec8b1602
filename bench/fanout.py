"""Fan-out throughput: 2 routes over the same 20k backlog, evroute's engine against a
hand-built Redis Streams -> aiohttp relay with two consumer groups, same receiver, same run.

The relay is what a user would write instead of evroute: XADD the events, and per consumer
group a loop of XREADGROUP (256 at a time) -> POST each at concurrency 32 -> XACK.
redis-server comes from Debian (installed here if missing), `redis` from PyPI (bench extra).

    python bench/fanout.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from evroute.cloudevent import to_binary, to_json

from bench._common import ReceiverProcess, free_port, row, table, wait_port
from bench.deliver import CONCURRENCY, evroute_engine, make_events


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not available (apt-get install redis-server)")
    return found


async def relay(redis_port: int, url: str, events: list[Any]) -> float:
    import redis.asyncio as aioredis

    r = aioredis.Redis(port=redis_port)
    await r.delete("orders")
    pipe = r.pipeline(transaction=False)
    for e in events:
        pipe.xadd("orders", {"event": to_json(e)})
    await pipe.execute()
    groups = ["inventory", "payment"]
    for g in groups:
        await r.xgroup_create("orders", g, id="0")
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
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    evs = make_events(events)
    port = free_port()
    folder = tempfile.mkdtemp(prefix="evroute-redis-")
    server = subprocess.Popen(
        [
            redis_server(),
            "--port",
            str(port),
            "--dir",
            folder,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        with ReceiverProcess() as receiver:
            ref = asyncio.run(relay(port, receiver.url, evs))
            ours = evroute_engine(receiver.url, evs, 2)
    finally:
        server.terminate()
        server.wait(10)
    return [row("fan-out, 2 routes (total deliveries)", ours, ref, "ev/s", ">= 1.0", ours / ref >= 1.0)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
