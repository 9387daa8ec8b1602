"""Footprint figures: worker memory with a 1M-event backlog, publish rate into a database
already holding 1M events against an empty one, and database bytes per event with 10
routes against 1 route.

    python bench/footprint.py [--backlog 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evroute.cloudevent import make_event
from evroute.store import Store, cursors
from evroute.store import log as event_log

from bench._common import ReceiverProcess, env, row, table

PAD = "x" * 900


def fill(db: str, n: int) -> None:
    """n events of ~1 KiB straight into the schema (fast: the figure is not about this)."""
    with Store(db):
        pass
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    now = time.time()
    for start in range(0, n, 50_000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (broker, id, source, type, time, datacontenttype, data, published_at) "
            "VALUES ('default', ?, '/fill', 'order.placed', '2026-01-01T00:00:00Z', 'application/json', ?, ?)",
            (
                (f"f-{i}", json.dumps({"order": i, "pad": PAD}).encode(), now)
                for i in range(start, min(n, start + 50_000))
            ),
        )
        conn.execute("COMMIT")
    conn.close()


def publish_rate(db: str, count: int = 20_000) -> float:
    """Steady-state rate: a warm-up round first (the first writes to a freshly filled file
    pay one-off costs such as reading its index pages from disk), then ``count`` timed."""
    warm = [
        make_event(type="order.placed", source="/warm", id=f"w-{i}", data=PAD.encode()) for i in range(5000)
    ]
    events = [
        make_event(type="order.placed", source="/rate", id=f"r-{i}", data=PAD.encode()) for i in range(count)
    ]
    with Store(db) as store:
        for i in range(0, len(warm), 1000):
            event_log.append(store, "default", warm[i : i + 1000])
        start = time.perf_counter()
        for i in range(0, count, 1000):
            event_log.append(store, "default", events[i : i + 1000])
        return count / (time.perf_counter() - start)


def rss_with_backlog(db: str, seconds: float = 10.0) -> float:
    folder = Path(db).parent
    with ReceiverProcess() as receiver:
        (folder / "routes.yaml").write_text(
            f"routes:\n  - {{name: big, subscriber: '{receiver.url}', start: earliest}}\n"
        )
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evroute",
                "--db",
                db,
                "--routes",
                str(folder / "routes.yaml"),
                "worker",
                "-q",
            ],
            env=env(),
        )
        peak = 0
        try:
            deadline = time.time() + seconds
            while time.time() < deadline and worker.poll() is None:
                time.sleep(0.2)
                for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        finally:
            worker.terminate()
            worker.wait(30)
    return peak / 1024


def bytes_per_event(routes: int, events: int = 10_000) -> float:
    folder = Path(tempfile.mkdtemp(prefix="evroute-bytes-"))
    db = str(folder / "ev.db")
    with ReceiverProcess() as receiver:
        (folder / "routes.yaml").write_text(
            "routes:\n"
            + "".join(
                f"  - {{name: r{i}, subscriber: '{receiver.url}', start: earliest}}\n" for i in range(routes)
            )
        )
        with Store(db) as store:
            cursors.ensure(store, [(f"r{i}", "default", "earliest") for i in range(routes)])
        fill(db, events)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "evroute",
                "--db",
                db,
                "--routes",
                str(folder / "routes.yaml"),
                "worker",
                "--drain",
                "-q",
            ],
            env=env(),
            check=True,
        )
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    size = os.path.getsize(db)
    conn.close()
    return size / events


def durability_cost(count: int = 500) -> tuple[float, float]:
    """Single-event commits per second with durability normal vs full (fsync per commit)."""
    folder = Path(tempfile.mkdtemp(prefix="evroute-durability-"))
    rates = []
    for mode in ("normal", "full"):
        with Store(str(folder / f"{mode}.db"), durability=mode) as store:
            events = [make_event(type="t", source="/d", id=f"{mode}-{i}", data=b"{}") for i in range(count)]
            start = time.perf_counter()
            for e in events:
                event_log.append(store, "default", [e])
            rates.append(count / (time.perf_counter() - start))
    return rates[0], rates[1]


def run(backlog: int = 1_000_000) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="evroute-footprint-"))
    empty = str(folder / "empty.db")
    full = str(folder / "full.db")
    fill(full, backlog)
    rate_empty = publish_rate(empty)
    rate_full = publish_rate(full)
    rss = rss_with_backlog(full)
    one = bytes_per_event(1)
    ten = bytes_per_event(10)
    normal, full_sync = durability_cost()
    return [
        {
            "figure": f"worker RSS, {backlog:,} backlog",
            "evroute": f"{rss:.1f} MB",
            "reference": "-",
            "ratio": "-",
            "goal": "<= 100 MB",
            "met": "yes" if rss <= 100 else "NO",
        },
        row(
            f"publish rate with {backlog:,} stored vs empty",
            rate_full,
            rate_empty,
            "ev/s",
            ">= 0.8",
            rate_full / rate_empty >= 0.8,
        ),
        row("db bytes per event, 10 routes vs 1", ten, one, "B", "<= 1.1", ten / one <= 1.1),
        {
            **row("single-event commits, durability full vs normal", full_sync, normal, "ev/s", "info", True),
            "goal": "info",
        },
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=1_000_000)
    print(table(run(parser.parse_args().backlog)))
