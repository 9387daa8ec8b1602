"""Load suite: eight publisher processes, HTTP ingress traffic and the worker, all on one
SQLite file at once, while the worker delivers to a real HTTP receiver.

- four publishers run ``evroute publish --file`` batch after batch (each batch a new process);
- four are small Python processes using the library, one event per transaction;
- a thread posts binary-mode events to ``evroute worker --listen`` at concurrency 8;
- every producer also re-sends some events it already sent (idempotent producers retrying).

Then the worker is stopped, ``evroute worker --drain`` finishes the backlog, and the suite
checks: no "database is locked" anywhere, every event published stored exactly once (per
source, by (broker, source, id)), nothing stored that was not published, every stored event
delivered at least once, and ``PRAGMA integrity_check`` is ok. ``make test`` runs the short
version (about 10 s of load); ``make soak`` the 60 s one. Both print the rates they saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import evroute, free_port

from receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PY = sys.executable
LOCKED = "database is locked"

# One event per transaction through the library, until the deadline; every 50th event is also
# sent again (a producer retrying after a timeout), which must be stored once.
LIB_PUBLISHER = """\
import json, sys, time
from evroute.cloudevent import make_event
from evroute.store import Store
from evroute.store import log

db, name, seconds, pause = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + seconds

def event(i):
    data = json.dumps({"i": i, "pad": "x" * 100}).encode()
    return make_event(type="load.lib", source="/" + name, id=f"{name}-{i}", data=data,
                      datacontenttype="application/json")

count = duplicates = 0
with Store(db) as store:
    while time.monotonic() < deadline:
        result = log.append(store, "default", [event(count)])
        assert result.stored == 1, result
        count += 1
        if count % 50 == 0:
            duplicates += log.append(store, "default", [event(count - 10)]).duplicates
        if pause:
            time.sleep(pause)
print(json.dumps({"count": count, "duplicates": duplicates}))
"""


class FilePublisher(threading.Thread):
    """``evroute publish --file`` of one batch after another until the deadline."""

    def __init__(self, folder: Path, k: int, deadline: float, batch: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.folder, self.k, self.deadline, self.batch, self.pause = folder, k, deadline, batch, pause
        self.ids: list[str] = []
        self.duplicates = 0
        self.errors: list[str] = []
        self.processes = 0

    def run(self) -> None:
        path = self.folder / f"batch-{self.k}.jsonl"
        n = 0
        while time.monotonic() < self.deadline:
            ids = [f"f{self.k}-{n}-{i}" for i in range(self.batch)]
            lines = [self.line(i) for i in ids]
            if self.ids:
                lines.append(self.line(self.ids[-1]))  # the last batch's last event, sent again
            path.write_text("".join(lines))
            proc = evroute(
                self.folder, "publish", "--file", str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = proc.communicate(timeout=120)
            self.processes += 1
            text = out.decode() + err.decode()
            match = re.search(r"stored (\d+), duplicates (\d+)", text)
            if proc.returncode != 0 or match is None or int(match[1]) != len(ids):
                self.errors.append(f"publish --file exit {proc.returncode}: {text.strip()}")
                return
            self.ids.extend(ids)
            self.duplicates += int(match[2])
            n += 1
            time.sleep(self.pause)

    def line(self, event_id: str) -> str:
        return (
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": f"/file-{self.k}",
                    "type": "load.file",
                    "data": {"pad": "y" * 100},
                }
            )
            + "\n"
        )


class IngressLoad(threading.Thread):
    """Binary-mode POSTs to the worker's ingress at modest concurrency, until the deadline."""

    def __init__(self, url: str, deadline: float, concurrency: int) -> None:
        super().__init__(daemon=True)
        self.url, self.deadline, self.concurrency = url, deadline, concurrency
        self.ids: list[str] = []
        self.duplicates = 0
        self.errors: list[str] = []

    def run(self) -> None:
        asyncio.run(self.main())

    async def main(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self.poster(session, w) for w in range(self.concurrency)))

    async def poster(self, session: aiohttp.ClientSession, w: int) -> None:
        i = 0
        while time.monotonic() < self.deadline and not self.errors:
            event_id = f"ing-{w}-{i}"
            if not await self.post(session, event_id):
                return
            self.ids.append(event_id)
            i += 1
            if i % 40 == 0 and not await self.post(session, f"ing-{w}-{i - 7}", duplicate=True):
                return

    async def post(self, session: aiohttp.ClientSession, event_id: str, duplicate: bool = False) -> bool:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/ingress",
            "ce-type": "load.ingress",
            "Content-Type": "application/json",
        }
        try:
            async with session.post(
                self.url, data=b'{"pad": "' + b"z" * 100 + b'"}', headers=headers
            ) as resp:
                answer = await resp.text()
                if resp.status != 202:
                    self.errors.append(f"ingress answered {resp.status}: {answer}")
                    return False
                if duplicate:
                    self.duplicates += json.loads(answer)["duplicates"]
                return True
        except aiohttp.ClientError as exc:
            self.errors.append(f"ingress request failed: {exc!r}")
            return False


def load_run(
    tmp_path: Path, seconds: float, *, lib_pause: float, file_batch: int, file_pause: float
) -> dict[str, Any]:
    receiver = Receiver().start()
    folder = tmp_path
    (folder / "routes.yaml").write_text(
        f"routes:\n  - {{name: orders, start: earliest, subscriber: '{receiver.url}/orders', "
        "delivery: {concurrency: 64}}\n"
    )
    port = free_port()
    worker_log = (folder / "worker.log").open("wb")
    worker = evroute(folder, "worker", "-q", "--listen", f"127.0.0.1:{port}", stderr=worker_log)
    try:
        deadline_wait = time.monotonic() + 20
        while not _accepting(port):
            assert worker.poll() is None and time.monotonic() < deadline_wait, "the worker did not start"
            time.sleep(0.05)
        started = time.monotonic()
        deadline = started + seconds
        libs = [
            subprocess.Popen(
                [PY, "-c", LIB_PUBLISHER, str(folder / "ev.db"), f"lib{k}", str(seconds), str(lib_pause)],
                env=ENV,
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for k in range(4)
        ]
        files = [FilePublisher(folder, k, deadline, file_batch, file_pause) for k in range(4)]
        ingress = IngressLoad(f"http://127.0.0.1:{port}/", deadline, 8)
        for t in [*files, ingress]:
            t.start()
        lib_results = []
        lib_stderr = []
        for proc in libs:
            out, err = proc.communicate(timeout=seconds + 120)
            lib_stderr.append(err.decode())
            assert proc.returncode == 0, err.decode()
            lib_results.append(json.loads(out))
        for t in [*files, ingress]:
            t.join(seconds + 120)
        load_seconds = time.monotonic() - started
        delivered_during_load = len(receiver.requests)
        assert worker.poll() is None, "the worker died under load"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        worker_log.close()
    try:
        drain_started = time.monotonic()
        drain = evroute(folder, "worker", "--drain", "-q", stderr=subprocess.PIPE)
        _, drain_err = drain.communicate(timeout=600)
        drain_seconds = time.monotonic() - drain_started
        assert drain.returncode == 0, drain_err.decode()
    finally:
        receiver.stop()

    # ---- no lock errors anywhere
    logs = {
        "worker": (folder / "worker.log").read_text(),
        "drain": drain_err.decode(),
        **{f"lib{k}": text for k, text in enumerate(lib_stderr)},
    }
    for name, text in logs.items():
        assert LOCKED not in text, f"{name}: {text[-2000:]}"
        assert "Traceback" not in text, f"{name}: {text[-2000:]}"
    for t in files:
        assert not t.errors, t.errors
    assert not ingress.errors, ingress.errors

    # ---- what was published is stored, once
    published: dict[str, set[str]] = {}
    for k, result in enumerate(lib_results):
        published[f"/lib{k}"] = {f"lib{k}-{i}" for i in range(result["count"])}
    for t in files:
        published[f"/file-{t.k}"] = set(t.ids)
    published["/ingress"] = set(ingress.ids)
    conn = sqlite3.connect(folder / "ev.db")
    try:
        rows = conn.execute("SELECT broker, source, id FROM events").fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    assert integrity == "ok"
    identity = Counter(rows)
    assert [key for key, n in identity.items() if n > 1] == []
    stored: dict[str, set[str]] = {}
    for _, source, event_id in rows:
        stored.setdefault(source, set()).add(event_id)
    per_source = {source: len(ids) for source, ids in stored.items()}
    assert per_source == {source: len(ids) for source, ids in published.items()}
    for source, ids in published.items():
        assert stored[source] == ids, source
    # every producer really did resend events, and each resend was a duplicate
    assert all(r["duplicates"] > 0 for r in lib_results), lib_results
    assert all(t.duplicates > 0 for t in files if len(t.ids) > file_batch)
    assert ingress.duplicates > 0

    # ---- and delivered at least once
    received = Counter(receiver.ids())
    all_ids = {event_id for _, _, event_id in rows}
    missing = all_ids - set(received)
    assert not missing, f"{len(missing)} stored events were never delivered, e.g. {sorted(missing)[:5]}"

    total = len(rows)
    report = {
        "seconds": round(load_seconds, 1),
        "stored": total,
        "stored_per_s": round(total / load_seconds),
        "library_single_event_per_s": round(sum(r["count"] for r in lib_results) / load_seconds),
        "publish_file_per_s": round(sum(len(t.ids) for t in files) / load_seconds),
        "publish_file_processes": sum(t.processes for t in files),
        "ingress_per_s": round(len(ingress.ids) / load_seconds),
        "delivered_during_load_per_s": round(delivered_during_load / load_seconds),
        "drain_seconds": round(drain_seconds, 1),
        "redelivered": sum(received.values()) - len(received),
    }
    print("load suite:", json.dumps(report))
    return report


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_load_short(tmp_path: Path) -> None:
    # Paced so that the worker keeps up and the final drain is short: the point is contention
    # (eight writers, the ingress and the worker's commits on one file), not peak rates.
    load_run(tmp_path, 10.0, lib_pause=0.004, file_batch=200, file_pause=0.3)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_load_soak(tmp_path: Path) -> None:
    # Twice the short run's pace, for a minute. (Unpaced, eight publishers hold the write lock
    # nearly all the time; docs/reliability.md has the figures of such a run.)
    load_run(tmp_path, 60.0, lib_pause=0.002, file_batch=500, file_pause=0.2)
