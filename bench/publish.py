"""Publish figures (SPEC 9, first two rows), each against its reference measured in this run:

1. bulk publish: ``evroute publish --file`` of N events of ~1 KiB (JSON lines) against a plain
   ``sqlite3`` script that reads and ``json.loads`` the same file and inserts the same rows
   into the same schema with ``executemany``, 1000 rows a transaction (goal: >= 0.5);
2. one ``evroute publish --type x`` process against ``python3 -c "import click, sqlite3"``,
   median wall time (goal: <= 1.3).

Both run with this interpreter (sys.executable), in subprocesses, with bytecode caching on
(as an installed package has it), after warm-up runs.

    python bench/publish.py [--events 100000] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, row, table

# The reference ingester: what a competent hand-written loader does with the same file, with
# the same schema (evroute's own DDL) and the same durability (WAL, synchronous=NORMAL).
RAW_SCRIPT = r"""
import json, sqlite3, sys, time
from evroute.store.schema import _STATEMENTS_V1, _STATEMENTS_V2
db, path = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = NORMAL")
for statement in _STATEMENTS_V1 + _STATEMENTS_V2:
    conn.execute(statement)
INSERT = ("INSERT OR IGNORE INTO events (broker, id, source, type, subject, time, datacontenttype, "
          "dataschema, extensions, data, published_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
CORE = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data"}
now = time.time()
rows = []
stored = 0
with open(path, "rb") as fh:
    for line in fh:
        o = json.loads(line)
        ext = {k: v for k, v in o.items() if k not in CORE}
        d = o.get("data")
        rows.append(("default", o["id"], o["source"], o["type"], o.get("subject"), o.get("time"),
                     o.get("datacontenttype"), o.get("dataschema"),
                     json.dumps(ext, separators=(",", ":")) if ext else None,
                     None if d is None else json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode(),
                     now))
        if len(rows) == 1000:
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
            stored += len(rows)
            rows = []
if rows:
    conn.execute("BEGIN")
    conn.executemany(INSERT, rows)
    conn.execute("COMMIT")
    stored += len(rows)
print(stored)
"""


def _env() -> dict[str, str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its .pyc files
    return environ


def write_events(path: Path, count: int) -> None:
    """``count`` structured events of ~1 KiB each, one per line, as a producer would write them."""
    pad = "x" * 760
    with path.open("w") as fh:
        for i in range(count):
            event = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "/shop/orders",
                "type": "order.placed",
                "subject": f"order-{i}",
                "time": "2026-01-02T15:04:05.123Z",
                "datacontenttype": "application/json",
                "data": {"order": i, "sku": "A-1", "qty": 1 + i % 5, "note": pad},
            }
            fh.write(json.dumps(event) + "\n")


def _fresh(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bulk(folder: Path, count: int, rounds: int = 2) -> tuple[float, float]:
    """Events per second of (evroute publish --file, raw sqlite3), best of ``rounds`` each."""
    data = folder / "events.jsonl"
    write_events(data, count)
    db = folder / "bulk.db"
    ours, raw = [], []
    for _ in range(rounds):  # alternate, so a noisy moment hurts both sides alike
        _fresh(db)
        ours.append(
            _timed(
                [
                    sys.executable,
                    "-m",
                    "evroute",
                    "--db",
                    str(db),
                    "--routes",
                    str(folder / "none.yaml"),
                    "publish",
                    "--file",
                    str(data),
                ],
                folder,
            )
        )
        _fresh(db)
        raw.append(_timed([sys.executable, "-c", RAW_SCRIPT, str(db), str(data)], folder))
    _fresh(db)
    return count / min(ours), count / min(raw)


def startup(folder: Path, runs: int = 20, budget: float = 120.0) -> tuple[float, float]:
    """Median wall seconds of (one evroute publish, python -c "import click, sqlite3")."""
    db = folder / "one.db"
    subprocess.run(
        [sys.executable, "-m", "evroute", "--db", str(db), "--routes", str(folder / "routes.yaml"), "init"],
        cwd=folder,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ours_cmd = [
        sys.executable,
        "-m",
        "evroute",
        "--db",
        str(db),
        "--routes",
        str(folder / "routes.yaml"),
        "publish",
        "--type",
        "x",
    ]
    ref_cmd = [sys.executable, "-c", "import click, sqlite3"]
    for _ in range(3):  # warm-up: bytecode, page cache, the routes cache in the database
        _timed(ours_cmd, folder)
        _timed(ref_cmd, folder)
    ours, ref = [], []
    deadline = time.monotonic() + budget
    while len(ours) < runs and time.monotonic() < deadline:
        ours.append(_timed(ours_cmd, folder))
        ref.append(_timed(ref_cmd, folder))
    return statistics.median(ours), statistics.median(ref)


def run(events: int = 100_000, runs: int = 20) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="evroute-publish-") as tmp:
        folder = Path(tmp)
        ours_rate, raw_rate = bulk(folder, events)
        ours_s, ref_s = startup(folder, runs)
    return [
        row(
            f"bulk publish --file, {events:,} x 1 KiB",
            ours_rate,
            raw_rate,
            "ev/s",
            ">= 0.5",
            ours_rate / raw_rate >= 0.5,
        ),
        row(
            "one `evroute publish` vs import click, sqlite3",
            ours_s * 1000,
            ref_s * 1000,
            "ms",
            "<= 1.3",
            ours_s / ref_s <= 1.3,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(table(run(min(args.events, 2_000_000), min(args.runs, 200))))
