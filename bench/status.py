"""`evroute status --json` on a database holding 1M events (plus retries and dead letters),
against the same command on an empty database: the difference is what the queries cost.

    python bench/status.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evroute.cloudevent import make_event, to_json
from evroute.store import Store, cursors

from bench._common import env, row, table

ROUTES = """\
routes:
  - {name: inventory, broker: default, subscriber: "http://127.0.0.1:9/inventory", start: earliest}
  - {name: payment, broker: default, subscriber: "http://127.0.0.1:9/payment", start: earliest}
  - {name: audit, broker: audit, subscriber: "http://127.0.0.1:9/audit", start: earliest}
"""
CHUNK = 50_000


def fill(folder: Path, events: int) -> tuple[str, str]:
    """A database like one after a long outage of `payment`: a 1M-event log, the payment
    cursor far behind, 10k scheduled retries and 10k dead letters."""
    db = str(folder / "big.db")
    routes = folder / "routes.yaml"
    routes.write_text(ROUTES)
    with Store(db) as store:
        cursors.ensure(
            store, [("inventory", "default", "earliest"), ("payment", "default", "earliest")], now=0
        )
        cursors.ensure(store, [("audit", "audit", "earliest"), ("retired", "default", "earliest")], now=0)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    now = time.time()
    body = json.dumps({"order": 1, "sku": "SKU-1", "pad": "x" * 200}).encode()
    for start in range(0, events, CHUNK):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (broker, id, source, type, time, datacontenttype, data, published_at) "
            "VALUES (?, ?, '/fill', 'order.placed', '2026-01-01T00:00:00Z', 'application/json', ?, ?)",
            (
                ("audit" if i % 10 == 0 else "default", f"f-{i}", body, now)
                for i in range(start, min(events, start + CHUNK))
            ),
        )
        conn.execute("COMMIT")
    letter = to_json(make_event(type="order.placed", source="/fill", id="dead", data=body))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO retries (route, seq, attempt, due_at, last_status, last_error) VALUES (?,?,?,?,?,?)",
        (("payment", seq, 2, now + seq % 60, 503, "HTTP 503") for seq in range(1, 10_001)),
    )
    conn.executemany(
        "INSERT INTO dead_letters (route, broker, seq, event, event_id, event_type, attempts, status, reason, "
        "error, dead_at) VALUES ('payment', 'default', ?, ?, 'dead', 'order.placed', 4, 503, "
        "'retries exhausted', 'HTTP 503', ?)",
        ((seq, letter, now) for seq in range(10_001, 20_001)),
    )
    conn.execute(
        "UPDATE cursors SET position = ? WHERE route = 'inventory'", (events - 1000,)
    )  # inventory nearly caught up; payment, audit and retired still at 0: the longest counts
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db, str(routes)


def time_status(db: str, routes: str, runs: int = 7) -> tuple[float, dict[str, Any]]:
    """Median wall time of `evroute status --json` in ms, and its last output."""
    argv = [sys.executable, "-m", "evroute", "--db", db, "--routes", routes, "status", "--json"]
    subprocess.run(argv, env=env(), check=True, capture_output=True)  # warm the page cache
    times = []
    out = b""
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(argv, env=env(), check=True, capture_output=True).stdout
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), json.loads(out)


def run(events: int = 1_000_000) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="evroute-status-"))
    empty = str(folder / "empty.db")
    with Store(empty):
        pass
    try:
        started = time.perf_counter()
        db, routes = fill(folder, events)
        print(f"  filled {events:,} events in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        big_ms, doc = time_status(db, routes)
        empty_ms, _ = time_status(empty, routes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lags = {r["name"]: r["lag"] for r in doc["routes"]}
    print(f"  lags: {lags}", file=sys.stderr)
    return [
        row(
            f"`status --json`, {events:,} events vs empty db",
            big_ms,
            empty_ms,
            "ms",
            "< 1000 ms",
            big_ms < 1000,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    print(table(run(parser.parse_args().events)))
