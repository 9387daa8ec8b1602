"""Publish -> delivery latency with the worker idle-waiting, at half the peak rate.

A publisher process appends one event per transaction at a steady rate, each carrying its
publish time; `evroute worker` (a real process) delivers them to a receiver that records
arrival - publish time. The peak is measured first in the same run (a burst backlog, as
bench/deliver.py measures it); the steady rate is half of it.

    python bench/latency.py [--seconds 8]
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

from bench._common import ReceiverProcess, env, free_port, table
from bench.deliver import evroute_engine, make_events

PUBLISHER = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from evroute.cloudevent import make_event
from evroute.store import Store, log
store = Store(sys.argv[1])
rate, seconds = float(sys.argv[2]), float(sys.argv[3])
start = time.time(); n = 0
while time.time() - start < seconds:
    due = start + n / rate
    pause = due - time.time()
    if pause > 0:
        time.sleep(pause)
    ev = make_event(type="t", source="/lat", id=str(n), data=json.dumps({"ts": time.time()}).encode(),
                    datacontenttype="application/json")
    log.append(store, "default", [ev])
    n += 1
print(n)
"""


class LatencyReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.samples: list[float] = []
        self.ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self.ready.wait(10)

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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(seconds: float = 8.0, rate: float | None = None) -> list[dict[str, Any]]:
    with ReceiverProcess() as peak_receiver:
        peak = evroute_engine(peak_receiver.url, make_events(5000), 1)
    rate = rate or peak / 2
    folder = Path(tempfile.mkdtemp(prefix="evroute-latency-"))
    receiver = LatencyReceiver()
    (folder / "routes.yaml").write_text(
        f"routes:\n  - {{name: lat, subscriber: 'http://127.0.0.1:{receiver.port}/'}}\n"
    )
    db = str(folder / "ev.db")
    base = [sys.executable, "-m", "evroute", "--db", db, "--routes", str(folder / "routes.yaml")]
    subprocess.run([*base, "routes", "check"], env=env(), check=True, capture_output=True)
    worker = subprocess.Popen([*base, "worker", "-q"], env=env())
    time.sleep(1.5)
    try:
        pub = subprocess.run(
            [
                sys.executable,
                "-c",
                PUBLISHER,
                db,
                str(rate),
                str(seconds),
                str(Path(__file__).resolve().parents[1]),
            ],
            env=env(),
            capture_output=True,
            text=True,
            check=True,
        )
        sent = int(pub.stdout.strip())
        deadline = time.time() + 10
        while len(receiver.samples) < sent and time.time() < deadline:
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(30)
    samples = receiver.samples[int(len(receiver.samples) * 0.1) :]  # skip the warm-up tenth
    p50, p99 = percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000
    achieved = len(receiver.samples) / seconds
    return [
        {
            "figure": f"latency p50 at {achieved:,.0f} ev/s (peak {peak:,.0f})",
            "evroute": f"{p50:.2f} ms",
            "reference": "-",
            "ratio": "-",
            "goal": "<= 5 ms",
            "met": "yes" if p50 <= 5 else "NO",
        },
        {
            "figure": "latency p99",
            "evroute": f"{p99:.2f} ms",
            "reference": "-",
            "ratio": "-",
            "goal": "<= 25 ms",
            "met": "yes" if p99 <= 25 else "NO",
        },
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, help="events/s instead of half the measured peak")
    args = parser.parse_args()
    print(table(run(args.seconds, args.rate)))
