"""HTTP delivery throughput: a 20k-event backlog delivered by `evroute worker --drain` (a
process, as installed; its wall time on an empty backlog subtracted: steady state) at
concurrency 32 to a local no-work receiver, against a bare aiohttp client posting the same
bodies at concurrency 32 to the same receiver, in the same run. Then 2 routes (fan-out).

    python bench/deliver.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import uvloop

from evroute.cloudevent import make_event, to_binary
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors
from evroute.store import log as event_log

from bench._common import ReceiverProcess, env, row, table

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


def _fill(folder: Path, url: str, events: list[Any], routes: int) -> list[str]:
    """routes.yaml with ``routes`` routes to ``url`` and a database holding ``events``; the
    command line of ``evroute worker --drain`` over them (the installed product, a process)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = str(folder / "ev.db")
    text = "routes:\n" + "".join(
        f"  - {{name: r{i}, subscriber: '{url}', start: earliest, delivery: {{concurrency: {CONCURRENCY}}}}}\n"
        for i in range(routes)
    )
    (folder / "routes.yaml").write_text(text)
    rs = load_routes_text(text, str(folder / "routes.yaml"))
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes])
        for i in range(0, len(events), 1000):
            event_log.append(store, "default", events[i : i + 1000])
    return [sys.executable, "-m", "evroute", "--db", db, "--routes", str(folder / "routes.yaml")]


def _drain_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*argv, "worker", "--drain", "-q"], check=True, env=env())
    return time.perf_counter() - start


def start_up_seconds(url: str, routes: int) -> float:
    """Wall time of ``worker --drain`` on an empty backlog (start-up, lease, stop): the best of three."""
    folder = Path(tempfile.mkdtemp(prefix="evroute-bench-empty-"))
    argv = _fill(folder, url, [], routes)
    return min(_drain_seconds(argv) for _ in range(3))


def evroute_engine(url: str, events: list[Any], routes: int) -> float:
    """Deliveries/s of ``evroute worker --drain`` over the backlog, steady state: its wall time
    less that of the same command on an empty backlog."""
    folder = Path(tempfile.mkdtemp(prefix="evroute-bench-"))
    argv = _fill(folder, url, events, routes)
    empty = start_up_seconds(url, routes)
    elapsed = _drain_seconds(argv) - empty
    with Store(str(folder / "ev.db")) as store:
        delivered = sum(c.delivered for c in cursors.all_cursors(store).values())
    assert delivered == len(events) * routes, delivered
    print(
        f"worker --drain, {routes} route(s): {delivered} deliveries in {elapsed + empty:.2f}s, "
        f"less {empty:.2f}s on an empty backlog",
        file=sys.stderr,
    )
    return delivered / elapsed


def run(events: int = 20_000) -> list[dict[str, Any]]:
    evs = make_events(events)
    with ReceiverProcess() as receiver:
        uvloop.run(bare_client(receiver.url, evs[:2000]))  # warm up the receiver
        ref = uvloop.run(bare_client(receiver.url, evs))
        one = evroute_engine(receiver.url, evs, 1)
        two = evroute_engine(receiver.url, evs, 2)
    return [
        row("HTTP delivery, 1 route, c=32", one, ref, "ev/s", ">= 0.85", one / ref >= 0.85),
        {**row("HTTP delivery, 2 routes (total)", two, ref, "ev/s", "(see fanout)", True), "goal": "info"},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
