"""The strong reference relay: what a user would write for throughput with Redis Streams.

One process per consumer group: XREADGROUP COUNT 256 (blocking), each message POSTed as a
binary-mode CloudEvent with 32 POSTs in flight on one keep-alive aiohttp session (uvloop), the
acknowledgements batched into one XACK every 5 ms. redis-server comes from Debian (installed
here if missing), `redis` from PyPI (the bench extra: it is the reference's, not evroute's).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from typing import IO

from bench._common import env, free_port, wait_port

# argv: redis port, group, url, messages to acknowledge before exiting (0: run until stopped)
RELAY = """
import asyncio, sys, time
import aiohttp, uvloop
import redis.asyncio as aioredis
from evroute.cloudevent import from_json, to_binary

port, group, url, expected = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    r = aioredis.Redis(port=port)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sem = asyncio.Semaphore(32)
    pending, acked, tasks = [], 0, set()
    done = asyncio.Event()

    async def post(msg_id, payload):
        try:
            headers, body = to_binary(from_json(payload))
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
            pending.append(msg_id)
        finally:
            sem.release()

    async def acker():
        nonlocal acked
        while True:
            await asyncio.sleep(0.005)
            if pending:
                batch = pending[:]
                del pending[:]
                await r.xack("orders", group, *batch)
                acked += len(batch)
                if expected and acked >= expected:
                    done.set()
                    return

    async def reader():
        while True:
            batch = await r.xreadgroup(group, "c1", {"orders": ">"}, count=256, block=1000)
            for _stream, messages in batch:
                for msg_id, fields in messages:
                    await sem.acquire()
                    t = asyncio.create_task(post(msg_id, fields[b"event"]))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)

    await r.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    ack_task = asyncio.create_task(acker())
    read_task = asyncio.create_task(reader())
    await done.wait()
    print(f"{time.time():.6f}", flush=True)
    read_task.cancel()
    ack_task.cancel()
    await session.close()
    await r.aclose()

uvloop.run(main())
"""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not available (apt-get install redis-server)")
    return found


class RedisServer:
    """redis-server on a free port with an append-only file synced every second (what a user
    running it as a broker would configure), in a temporary folder."""

    def __init__(self) -> None:
        self.port = free_port()
        folder = tempfile.mkdtemp(prefix="evroute-redis-")
        self.proc = subprocess.Popen(
            [
                *(redis_server(), "--port", str(self.port), "--dir", folder, "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "everysec"),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RelayProcess:
    """One strong relay process for one consumer group; ``go()`` starts it reading."""

    def __init__(self, redis_port: int, group: str, url: str, expected: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RELAY, str(redis_port), group, url, str(expected)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
        )
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        if out.readline().strip() != "ready":
            raise RuntimeError("the relay did not start")

    def go(self) -> None:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write("go\n")
        stdin.flush()

    def finished_at(self, timeout: float = 300) -> float:
        """The wall-clock time it acknowledged its last message (waits for it)."""
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        line = out.readline()
        self.proc.wait(timeout)
        return float(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
