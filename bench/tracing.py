"""Tracing cost on delivery: the 20k-event backlog of bench/deliver.py (1 route, c=32, a local
no-work receiver) delivered with spans exported to a collector that is down (a closed port:
every span made, queued, batched and dropped) against tracing off, in the same run. Runs
alternate, off first, and the best of each counts.

    python bench/tracing.py [--events 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evroute import tracing

from bench._common import ReceiverProcess, row, table
from bench.deliver import evroute_engine, make_events


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(events: int = 20_000, rounds: int = 2) -> list[dict[str, Any]]:
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
    off: list[float] = []
    on: list[float] = []
    with ReceiverProcess() as receiver:
        evroute_engine(receiver.url, evs[:2000], 1)  # warm up the receiver and the engine
        for _ in range(rounds):
            off.append(evroute_engine(receiver.url, evs, 1))
            assert tracing.setup(down)
            try:
                on.append(evroute_engine(receiver.url, evs, 1))
            finally:
                tracing.shutdown()
    best_on, best_off = max(on), max(off)
    return [
        row(
            "tracing on, collector down vs off",
            best_on,
            best_off,
            "ev/s",
            ">= 0.9",
            best_on / best_off >= 0.9,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(table(run(args.events, args.rounds)))
