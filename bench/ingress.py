"""Ingress throughput: binary-mode CloudEvents posted over HTTP to the evroute ingress (each one
parsed, validated and committed to SQLite before the 202), against a reference aiohttp server
whose handler reads the body and answers 202 without doing anything else, in the same run.

Each server runs in its own process (uvloop when installed, as the worker does); the load
comes from one aiohttp client session (keep-alive) with 32 posts in flight, in this process.

    python bench/ingress.py [--events 20000] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from evroute.cloudevent import make_event, to_binary

from bench._common import env, free_port, row, table, wait_port

CONCURRENCY = 32

INGRESS = """
import asyncio, sys
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
from evroute.store import Store
from evroute.worker.ingress import make_app, start
from evroute.worker.metrics import Metrics

async def main():
    store = Store(sys.argv[1])
    app = make_app(store=store, max_event_bytes=1 << 20, token=None, metrics=Metrics(), on_stored=lambda b: None)
    await start(app, "127.0.0.1", int(sys.argv[2]))
    await asyncio.Event().wait()

asyncio.run(main())
"""

REFERENCE = """
import sys
from aiohttp import web
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
async def accept(request):
    await request.read()
    return web.Response(status=202)
app = web.Application()
app.router.add_post("/{tail:.*}", accept)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class Server:
    def __init__(self, script: str, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", script, *args, str(self.port)], env=env())
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def requests(n: int, prefix: str) -> list[tuple[dict[str, str], bytes]]:
    """Binary-mode requests of ~1 KiB JSON events, each with its own id."""
    return [
        to_binary(
            make_event(
                type="order.placed",
                source="/bench/ingress",
                id=f"{prefix}-{i}",
                data=json.dumps({"order": i, "pad": "x" * 900}).encode(),
                datacontenttype="application/json",
            )
        )
        for i in range(n)
    ]


async def post_all(url: str, reqs: list[tuple[dict[str, str], bytes]], seconds: float) -> tuple[int, float]:
    """Post until done or out of time; return (events accepted, events/s)."""
    queue = iter(reqs)
    sent = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            nonlocal sent
            for headers, body in queue:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 202:
                        raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
                sent += 1
                if time.perf_counter() > deadline:
                    return

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return sent, sent / (time.perf_counter() - start)


def run(events: int = 20_000, seconds: float = 20.0, rounds: int = 3) -> list[dict[str, Any]]:
    """``rounds`` rounds, each a run against the reference then one against the ingress; the
    figure is the median of the per-round ratios, so that load from other work on the machine,
    which drifts slowly, weighs on both sides of each ratio alike."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    folder = Path(tempfile.mkdtemp(prefix="evroute-bench-ingress-"))
    db = folder / "ev.db"
    warm = requests(1000, "warm")
    reference = Server(REFERENCE)
    ingress = Server(INGRESS, str(db))
    ref_rates: list[float] = []
    our_rates: list[float] = []
    acknowledged = 0
    try:
        asyncio.run(post_all(reference.url, warm, seconds))
        asyncio.run(post_all(ingress.url, warm, seconds))
        for r in range(rounds):
            batch = requests(events, f"ev{r}")
            ref_rates.append(asyncio.run(post_all(reference.url, batch, seconds))[1])
            sent, rate = asyncio.run(post_all(ingress.url, batch, seconds))
            our_rates.append(rate)
            acknowledged += sent
    finally:
        ingress.stop()
        reference.stop()
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM events WHERE id LIKE 'ev%'").fetchone()[0]
    if stored != acknowledged:
        raise RuntimeError(f"the ingress acknowledged {acknowledged} events but stored {stored}")
    ratio = statistics.median(o / r for o, r in zip(our_rates, ref_rates, strict=True))
    ours, ref = statistics.median(our_rates), statistics.median(ref_rates)
    print(
        f"ingress: {', '.join(f'{x:,.0f}' for x in our_rates)} events/s (each committed before its 202); "
        f"reference aiohttp (no work): {', '.join(f'{x:,.0f}' for x in ref_rates)} requests/s; "
        f"median ratio {ratio:.2f}",
        file=sys.stderr,
    )
    return [row("ingress POST, binary mode, c=32", ours, ref, "ev/s", ">= 0.75", ratio >= 0.75, ratio=ratio)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="cap on one run against one server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(run(args.events, args.seconds, args.rounds)))
