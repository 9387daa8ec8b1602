"""Publish -> delivery latency through the ingress, against the strong relay at the same rate.

A publisher process (aiohttp, open loop: one request started on schedule whatever the earlier
ones are doing) POSTs binary-mode events at a steady rate to `evroute worker --listen` (a real
process, as installed), each carrying its send time; the worker delivers them to a receiver
that records arrival - send time. The reference, in the same run and at the same offered
rate: the same publisher XADDs each event to Redis Streams, and one strong relay process
(bench/relay.py: XREADGROUP 256, 32 POSTs in flight, XACK every 5 ms) posts it to the same
receiver. Rates: 500 ev/s and half of the peak that `worker --drain` reaches on a backlog
(bench/deliver.py). The first tenth of each run is left out (warm-up).

    python bench/latency.py [--seconds 6] [--runs 3] [--rate 500 --rate 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from bench._common import ReceiverProcess, env, free_port, table, wait_port
from bench.deliver import evroute_engine, make_events
from bench.relay import RedisServer, RelayProcess

# argv: "http" URL | "redis" PORT, rate, seconds
PUBLISHER = """
import asyncio, json, sys, time
import aiohttp, uvloop

mode, target, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

async def main():
    if mode == "http":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

        async def send(n):
            headers = {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/lat", "ce-id": str(n),
                       "content-type": "application/json"}
            body = json.dumps({"ts": time.time()}).encode()
            async with session.post(target, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    refused.append(resp.status)
    else:
        import redis.asyncio as aioredis
        # A blocking pool: past 256 XADDs in flight the next waits for a connection (a plain
        # pool raises, and the event would never reach the stream).
        r = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool(port=int(target), max_connections=256, timeout=None)
        )

        async def send(n):
            event = {"specversion": "1.0", "type": "t", "source": "/lat", "id": str(n),
                     "datacontenttype": "application/json", "data": {"ts": time.time()}}
            await r.xadd("orders", {"event": json.dumps(event)})

    tasks, refused = set(), []

    async def counted(n):
        try:
            await send(n)
        except Exception as exc:  # counted as refused, never as sent
            refused.append(type(exc).__name__)

    start, n = time.time(), 0
    while (now := time.time()) - start < seconds:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        t = asyncio.create_task(counted(n))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)
    print(n - len(refused), len(refused), sorted(set(map(str, refused))))

uvloop.run(main())
"""


class LatencyReceiver:
    """Records arrival - send time of every POST, in a thread of this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.samples: list[float] = []
        self.ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self.ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _serve(self) -> None:
        import asyncio

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.samples.append(time.time() - json.loads(body)["ts"])
            return web.Response(status=200)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.ready.set()
            while True:
                await asyncio.sleep(3600)

        asyncio.run(main())

    def collect(self, sent: int, timeout: float = 10.0) -> list[float]:
        """This run's samples (warm-up tenth left out), waiting up to ``timeout`` for them all;
        an event still missing then counts as taking forever (it weighs on every percentile)."""
        deadline = time.time() + timeout
        while len(self.samples) < sent and time.time() < deadline:
            time.sleep(0.05)
        got, self.samples = self.samples, []
        if len(got) < sent:
            print(f"{sent} events sent, {len(got)} delivered within {timeout:g}s more", file=sys.stderr)
            got += [float("inf")] * (sent - len(got))
        return got[len(got) // 10 :]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publish(mode: str, target: str, rate: float, seconds: float) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PUBLISHER, mode, target, str(rate), str(seconds)],
        env=env(),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"the {mode} publisher failed: {done.stderr.strip().splitlines()[-1]}")
    accepted, refused, statuses = done.stdout.split(maxsplit=2)
    print(
        f"{mode} publisher: offered {rate:,.0f} ev/s for {seconds:g} s, sent {accepted} "
        f"({int(accepted) / seconds:,.0f} ev/s)",
        file=sys.stderr,
    )
    if int(refused):
        print(
            f"{mode}: {refused} of the events refused at {rate:,.0f} ev/s ({statuses.strip()})",
            file=sys.stderr,
        )
    return int(accepted)


def through_evroute(receiver: LatencyReceiver, rate: float, seconds: float) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="evroute-latency-"))
    (folder / "routes.yaml").write_text(f"routes:\n  - {{name: lat, subscriber: '{receiver.url}'}}\n")
    port = free_port()
    argv = [sys.executable, "-m", "evroute", "--db", str(folder / "ev.db")]
    argv += ["--routes", str(folder / "routes.yaml"), "worker", "-q", "--listen", f"127.0.0.1:{port}"]
    worker = subprocess.Popen(argv, env=env())
    try:
        wait_port(port)
        sent = publish("http", f"http://127.0.0.1:{port}/", rate, seconds)
        return receiver.collect(sent)
    finally:
        worker.terminate()
        worker.wait(30)


def through_relay(receiver: LatencyReceiver, redis_port: int, rate: float, seconds: float) -> list[float]:
    import redis

    r = redis.Redis(port=redis_port)
    r.delete("orders")
    r.xgroup_create("orders", "lat", id="$", mkstream=True)
    r.close()
    relay = RelayProcess(redis_port, "lat", receiver.url, 0)
    try:
        relay.go()
        sent = publish("redis", str(redis_port), rate, seconds)
        return receiver.collect(sent)
    finally:
        relay.stop()


def run(seconds: float = 6.0, rates: list[float] | None = None, runs: int = 1) -> list[dict[str, Any]]:
    with ReceiverProcess() as peak_receiver:
        peak = evroute_engine(peak_receiver.url, make_events(5000), 1)
    offered = rates or [500.0, round(peak / 2)]
    receiver = LatencyReceiver()
    rows: list[dict[str, Any]] = []
    with RedisServer() as server:
        for n in range(runs):
            for rate in offered:
                ours = through_evroute(receiver, rate, seconds)
                ref = through_relay(receiver, server.port, rate, seconds)
                label = f"{rate:,.0f} ev/s" + (f" (peak {peak:,.0f})" if rate != 500 else "")
                if runs > 1:
                    label += f", run {n + 1}"
                for q in (0.5, 0.99):
                    a, b = percentile(ours, q) * 1000, percentile(ref, q) * 1000
                    rows.append(
                        {
                            "figure": f"latency p{round(q * 100)} at {label}",
                            "evroute": f"{a:.2f} ms" if a < float("inf") else "not delivered",
                            "reference": f"{b:.2f} ms (strong relay)"
                            if b < float("inf")
                            else "not delivered",
                            "ratio": f"{a / b:.2f}" if b < float("inf") else "-",
                            "goal": "<= 1.0",
                            "met": "yes" if a <= b and a < float("inf") else "NO",
                        }
                    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--rate", type=float, action="append", help="ev/s (repeatable); default 500 and half the peak"
    )
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(table(run(args.seconds, args.rate, args.runs)))
