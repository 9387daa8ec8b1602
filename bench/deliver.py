"""HTTP delivery throughput: a 20k-event backlog delivered by the evroute engine at
concurrency 32 to a local no-work receiver, against a bare aiohttp client posting the same
bodies at concurrency 32 to the same receiver, in the same run. Then 2 routes (fan-out).

    python bench/deliver.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from evroute.cloudevent import make_event, to_binary
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from bench._common import ReceiverProcess, row, table

CONCURRENCY = 32


def make_events(n: int) -> list[Any]:
    return [
        make_event(
            type="order.placed",
            source="/bench",
            id=f"e-{i}",
            data=json.dumps({"order": i, "pad": "x" * 900}).encode(),
            datacontenttype="application/json",
        )
        for i in range(n)
    ]


async def bare_client(url: str, events: list[Any]) -> float:
    """The reference: one session, keep-alive, 32 posts in flight, nothing else."""
    bodies = [to_binary(e) for e in events]
    queue = iter(bodies)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            for headers, body in queue:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(bodies) / (time.perf_counter() - start)


def evroute_engine(url: str, events: list[Any], routes: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="evroute-bench-"))
    db = str(folder / "ev.db")
    text = "routes:\n" + "".join(
        f"  - {{name: r{i}, subscriber: '{url}', start: earliest, delivery: {{concurrency: {CONCURRENCY}}}}}\n"
        for i in range(routes)
    )
    rs = load_routes_text(text, str(folder / "routes.yaml"))
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes])
        for i in range(0, len(events), 1000):
            event_log.append(store, "default", events[i : i + 1000])

    async def main() -> float:
        store = Store(db)
        engine = Engine(store, rs, once=True)
        start = time.perf_counter()
        await engine.start()
        await engine.run_until_idle(drain=True)
        elapsed = time.perf_counter() - start
        await engine.stop()
        delivered = sum(c.delivered for c in cursors.all_cursors(store).values())
        store.close()
        assert delivered == len(events) * routes, delivered
        return delivered / elapsed

    return asyncio.run(main())


def run(events: int = 20_000) -> list[dict[str, Any]]:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    evs = make_events(events)
    with ReceiverProcess() as receiver:
        asyncio.run(bare_client(receiver.url, evs[:2000]))  # warm up the receiver
        ref = asyncio.run(bare_client(receiver.url, evs))
        one = evroute_engine(receiver.url, evs, 1)
        two = evroute_engine(receiver.url, evs, 2)
    return [
        row("HTTP delivery, 1 route, c=32", one, ref, "ev/s", ">= 0.6", one / ref >= 0.6),
        {**row("HTTP delivery, 2 routes (total)", two, ref, "ev/s", "(see fanout)", True), "goal": "info"},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
