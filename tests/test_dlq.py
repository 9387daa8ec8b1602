"""`evroute dlq replay` on SQLite: the retry rows a replay schedules, the lease, the progress bar.
(list, show, purge and the refusals: tests/contract/test_contract_dlq_cli.py, for every store.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import json_event
from helpers import run_cli as run

from evroute.cloudevent import make_event
from evroute.store import Store, deadletters, lease, retries
from evroute.store import log as event_log
from evroute.store.deadletters import NewDeadLetter


class Env:
    """A database holding dead letters of two routes, and the global options to reach it."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = str(tmp_path / "ev.db")
        self.routes = str(tmp_path / "routes.yaml")  # absent: dlq commands need no routes file
        self.now = time.time()
        self.ids: dict[str, list[int]] = {"payment": [], "inventory": []}
        with Store(self.db) as store:
            for i in range(5):
                event = json_event("order.placed", f"order-{i}", {"order": i})
                [seq] = event_log.append(store, "default", [event]).seqs
                name = "payment" if i < 3 else "inventory"
                [dlq_id] = deadletters.add(
                    store,
                    [
                        NewDeadLetter(
                            route=name,
                            broker="default",
                            seq=seq,
                            event=event,
                            attempts=4,
                            status=503,
                            reason="retries exhausted",
                            error="HTTP 503 Service Unavailable",
                            body=b"payment down \xff\xfe",
                            first_failed_at=self.now - 100 + i,
                            dead_at=self.now - 50 + i,
                        )
                    ],
                )
                self.ids[name].append(dlq_id)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return run("--db", self.db, "--routes", self.routes, "dlq", *args)

    def retry_rows(self) -> list[retries.Retry]:
        with Store(self.db) as store:
            return [retries.Retry(*r) for r in store.conn.execute("SELECT * FROM retries ORDER BY seq")]

    def letters(self) -> list[deadletters.DeadLetter]:
        with Store(self.db) as store:
            return deadletters.listing(store)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_replay_named_ids_creates_due_retries_with_a_fresh_count(env: Env) -> None:
    chosen = env.ids["payment"][:2]
    before = time.time()
    code, out, err = env("replay", *map(str, chosen))
    assert code == 0, err
    assert out.strip() == "replayed 2 dead letters; the worker delivers them (running: no)"
    rows = env.retry_rows()
    assert [(r.route, r.attempt, r.dlq_id) for r in rows] == [("payment", 0, i) for i in chosen]
    assert all(before <= r.due_at <= time.time() for r in rows)
    letters = {d.id: d for d in env.letters()}
    assert all(letters[i].replayed_at is not None for i in chosen)
    assert letters[env.ids["payment"][2]].replayed_at is None


def test_replay_all_of_a_route_with_a_running_worker(env: Env) -> None:
    with Store(env.db) as store:
        assert lease.acquire(store, "w1")
    code, out, err = env("replay", "--route", "inventory", "--all")
    assert code == 0, err
    assert out.strip() == "replayed 2 dead letters; the worker delivers them (running: yes)"
    assert sorted(r.dlq_id or 0 for r in env.retry_rows()) == env.ids["inventory"]


def test_replay_route_alone_takes_every_dead_letter_of_that_route(env: Env) -> None:
    code, out, err = env("replay", "--route", "inventory", "--dry-run")
    assert code == 0, err
    assert f"would replay {len(env.ids['inventory'])} dead letter" in out
    assert env.retry_rows() == []


def _many_dead_letters(db: str, n: int) -> None:
    event = make_event(type="order.placed", source="/shop", id="bulk")
    with Store(db) as store:
        deadletters.add(
            store,
            [
                NewDeadLetter(
                    "payment", "default", None, event, 1, 400, "permanent failure", "HTTP 400", None, 0.0, 0.0
                )
                for _ in range(n)
            ],
        )


def test_replay_shows_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    db = str(tmp_path / "ev.db")
    _many_dead_letters(db, 1200)
    argv = [
        sys.executable,
        "-m",
        "evroute",
        "--db",
        db,
        "--routes",
        str(tmp_path / "r.yaml"),
        "dlq",
        "replay",
        "--all",
    ]
    environ = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    plain = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert "replaying" not in plain.stderr
    assert plain.stdout.strip() == "replayed 1200 dead letters; the worker delivers them (running: no)"
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(argv, env=environ, stdout=subprocess.PIPE, stderr=secondary, text=True)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"replaying" in seen
    assert out.strip() == "replayed 1200 dead letters; the worker delivers them (running: no)"
