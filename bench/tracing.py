"""Tracing cost on delivery: the 20k-event backlog of bench/deliver.py (1 route, c=32, a local
no-work receiver) delivered with spans exported to a collector that is down (a closed port:
spans made until the first failed export says so, then only their ids) against tracing off,
in the same run; and, for information, with a collector that answers (a second no-work server
taking every OTLP request: spans made, batched, encoded and sent). Runs alternate, off first.

Two measures: delivered events per second (best run of each), and the process's CPU time per
delivered event (all threads, the exporter's included; median run), whose inverse is the
throughput the same work reaches on an idle machine. On a host shared with other work the
first swings by 2x from run to run; the second does not.

    python bench/tracing.py [--events 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evroute import tracing
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from bench._common import ReceiverProcess, row, table
from bench.deliver import CONCURRENCY, make_events


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deliver(url: str, events: list[Any]) -> tuple[float, float]:
    """(events per second, CPU seconds per event) for one backlog through the engine."""
    folder = Path(tempfile.mkdtemp(prefix="evroute-bench-"))
    db = str(folder / "ev.db")
    text = f"routes:\n  - {{name: r, subscriber: '{url}', start: earliest, delivery: {{concurrency: {CONCURRENCY}}}}}\n"
    rs = load_routes_text(text, str(folder / "routes.yaml"))
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes])
        for i in range(0, len(events), 1000):
            event_log.append(store, "default", events[i : i + 1000])

    async def main() -> tuple[float, float]:
        store = Store(db)
        engine = Engine(store, rs, once=True)
        wall, cpu = time.perf_counter(), time.process_time()
        await engine.start()
        await engine.run_until_idle(drain=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await engine.stop()
        delivered = sum(c.delivered for c in cursors.all_cursors(store).values())
        store.close()
        assert delivered == len(events), delivered
        return delivered / wall, cpu / delivered

    return asyncio.run(main())


def run(events: int = 20_000, rounds: int = 3) -> list[dict[str, Any]]:
    try:
        import opentelemetry.sdk  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        print(f"bench/tracing.py: not run (install evroute[otel]: {exc})", file=sys.stderr)
        return []
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    evs = [tracing.ensure(e) for e in make_events(events)]  # published events carry a trace
    down = f"http://127.0.0.1:{closed_port()}"
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "down": [], "up": []}
    with ReceiverProcess() as receiver, ReceiverProcess() as collector:
        deliver(receiver.url, evs[:2000])  # warm up the receiver and the engine
        for _ in range(rounds):
            runs["off"].append(deliver(receiver.url, evs))
            for name, endpoint in (("down", down), ("up", collector.url.rstrip("/"))):
                assert tracing.setup(endpoint)
                try:
                    runs[name].append(deliver(receiver.url, evs))
                finally:
                    tracing.shutdown()
    rate = {name: max(r for r, _ in results) for name, results in runs.items()}
    cpu = {name: statistics.median(c for _, c in results) for name, results in runs.items()}
    for name, results in runs.items():
        print(
            f"  tracing {name}: " + ", ".join(f"{r:,.0f} ev/s ({c * 1e6:.0f} µs CPU/ev)" for r, c in results),
            file=sys.stderr,
        )
    down_cpu = cpu["off"] / cpu["down"]
    return [
        row(
            "tracing on, collector down vs off (CPU per event)",
            1 / cpu["down"],
            1 / cpu["off"],
            "ev/CPU-s",
            ">= 0.9",
            down_cpu >= 0.9,
        ),
        {
            **row(
                "tracing on, collector down vs off (best run)", rate["down"], rate["off"], "ev/s", "", True
            ),
            "goal": "info",
        },
        {
            **row(
                "tracing on, collector up vs off (CPU per event)",
                1 / cpu["up"],
                1 / cpu["off"],
                "ev/CPU-s",
                "",
                True,
            ),
            "goal": "info",
        },
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(run(args.events, args.rounds)))
