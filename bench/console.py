"""The web console on a big store: the overview and one event's page, each served (whole
HTML, over HTTP, from a separate `evroute ui` process) with 1M events and 10k dead letters.

    python bench/console.py [--events 1000000] [--dead 10000]

The store: three routes, two caught up and one 10,000 events behind (its lag is counted on
every overview), 10k dead letters, and an event with a failed-then-delivered timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from evroute.store import Store, attempts, cursors
from evroute.store.attempts import Attempt

from bench._common import env, free_port, wait_port
from bench.footprint import fill

ROUNDS = 30


def seed(folder: Path, events: int, dead: int) -> int:
    db = str(folder / "ev.db")
    (folder / "routes.yaml").write_text(
        "routes:\n"
        "  - {name: inventory, filter: {type: order.placed}, subscriber: 'http://127.0.0.1:9/inv'}\n"
        "  - {name: payment, filter: {type: order.placed}, subscriber: 'http://127.0.0.1:9/pay'}\n"
        "  - {name: audit, subscriber: 'http://127.0.0.1:9/audit'}\n"
    )
    fill(db, events)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    body = json.dumps({"specversion": "1.0", "id": "x", "source": "/fill", "type": "order.placed"}).encode()
    conn.executemany(
        "INSERT INTO dead_letters (route, broker, seq, event, event_id, event_type, attempts, status, reason, "
        "error, body, first_failed_at, dead_at) VALUES ('payment','default',?,?,?,'order.placed',4,500,"
        "'retries exhausted','HTTP 500',?,?,?)",
        ((i + 1, body, f"f-{i}", b"down", time.time(), time.time()) for i in range(dead)),
    )
    conn.execute("COMMIT")
    conn.close()
    target = events // 2
    with Store(db) as store:
        cursors.ensure(store, [("inventory", "default", "latest"), ("payment", "default", "latest")])
        cursors.ensure(store, [("audit", "default", "earliest")])
        cursors.reset(store, "audit", str(events - 10_000 + 1))
        now = time.time()
        attempts.record(
            store,
            [
                Attempt(
                    "payment", target, 1, now - 2, 12.0, "retriable", 503, "HTTP 503", b"busy", "http://x/"
                ),
                Attempt("payment", target, 2, now - 1, 8.0, "success", 200, None, None, "http://x/"),
            ],
        )
    return target


def timed(client: httpx.Client, path: str) -> list[float]:
    client.get(path).raise_for_status()  # warm: the routes file parsed, pages in the cache
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return times


def run(events: int = 1_000_000, dead: int = 10_000) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="evroute-console-"))
    target = seed(folder, events, dead)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evroute",
            "--db",
            str(folder / "ev.db"),
            "--routes",
            str(folder / "routes.yaml"),
            "ui",
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            "bench",
        ],
        env={**env(), "EVROUTE_TOKEN": ""},
        stdout=subprocess.DEVNULL,
        cwd=folder,
    )
    rows = []
    try:
        wait_port(port, 30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.post("/ui/login", data={"token": "bench", "next": "/ui/"})
            overview = timed(client, "/ui/")
            page = client.get(f"/ui/events/{target}").text
            assert re.search(r"#2 .*200", page), "the timeline is on the event page"
            event = timed(client, f"/ui/events/{target}")
            letters = timed(client, "/ui/dead-letters")
    finally:
        proc.terminate()
        proc.wait(10)
    for name, times, goal in (
        ("console overview page", overview, True),
        ("console event page", event, True),
        ("console dead-letters page (newest 200)", letters, False),
    ):
        median = statistics.median(times)
        p95 = sorted(times)[int(len(times) * 0.95) - 1]
        rows.append(
            {
                "figure": f"{name}, {events:,} events, {dead:,} dead letters",
                "evroute": f"median {median:.1f} ms, p95 {p95:.1f} ms",
                "reference": "-",
                "ratio": "-",
                "goal": "<= 100 ms" if goal else "info",
                "met": ("yes" if p95 <= 100 else "NO") if goal else "info",
            }
        )
    return rows


if __name__ == "__main__":
    from bench._common import table

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.pop("EVROUTE_TOKEN", None)
    print(table(run(args.events, args.dead)))
