"""`evroute status` and `evroute events show` on SQLite: what only this store has (the lease's
TTL, a log row deleted by retention, indexed queries). The documents themselves are checked
for every store in tests/contract/test_contract_status.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from contract.test_contract_status import route
from helpers import json_event
from helpers import run_cli as run

from evroute.inspect import route_status, trace_event
from evroute.routes.model import RouteSet
from evroute.store import Store, cursors, deadletters, lease, retries
from evroute.store import log as event_log
from evroute.store.cursors import Progress
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry
from evroute.store.sqlite import SqliteStore


def publish(
    store: Store, n: int, broker: str = "default", type: str = "order.placed", prefix: str = "e"
) -> list[int]:
    events = [json_event(type, f"{prefix}{i}", {"n": i}) for i in range(n)]
    seqs = []
    for event in events:
        result = event_log.append(store, broker, [event])
        seqs.append(result.seqs[0])
    return [int(s) for s in seqs if s is not None]


def advance(store: Store, name: str, position: int, **kw: Any) -> None:
    cursor = cursors.get(store, name)
    assert cursor is not None
    assert cursors.commit(store, [Progress(name, position, cursor.epoch, **kw)]) == []


def dead(store: Store, name: str, seq: int, now: float, broker: str = "default") -> int:
    stored = event_log.get(store, seq)
    assert stored is not None
    [dlq_id] = deadletters.add(
        store,
        [
            NewDeadLetter(
                route=name,
                broker=broker,
                seq=seq,
                event=stored.event,
                attempts=4,
                status=503,
                reason="retries exhausted",
                error="HTTP 503",
                body=b"down\xff",
                first_failed_at=now - 60,
                dead_at=now,
            )
        ],
    )
    return dlq_id


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store(str(tmp_path / "ev.db"))
    yield s
    s.close()


# --------------------------------------------------------------------------- events show


def test_events_show_after_retention_uses_the_dead_letter_copy(store: Store) -> None:
    now = time.time()
    [seq] = publish(store, 1)
    cursors.ensure(store, [("pay", "default", "earliest")])
    dlq_id = dead(store, "pay", seq, now)
    with store.write() as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    doc = trace_event(SqliteStore.over(store), RouteSet(routes=(route("pay"),)), "e0")
    assert doc["seq"] == seq and doc["published_at"] is None and doc["event"]["id"] == "e0"
    assert doc["routes"][0]["state"] == "dead" and doc["routes"][0]["dlq_id"] == dlq_id


# --------------------------------------------------------------------------- status


def test_status_lease_older_than_its_ttl_is_not_running(store: Store) -> None:
    """(The status and events show documents: tests/contract/test_contract_status.py.)"""
    now = time.time()
    # A lease whose heartbeat is older than the TTL belongs to a dead worker.
    assert lease.acquire(store, "w1", now=now - lease.TTL - 1)
    assert route_status(SqliteStore.over(store), RouteSet(), now)["worker"]["state"] == "not running"


def test_status_uses_indexed_queries_only(store: Store) -> None:
    now = time.time()
    rs = RouteSet(routes=(route("a"), route("b", broker="other")))
    publish(store, 5)
    cursors.ensure(
        store, [("a", "default", "earliest"), ("b", "other", "earliest"), ("gone", "default", "latest")]
    )
    retries.schedule(store, [Retry("a", 1, 1, now, now, 500, "x", None)])
    dead(store, "a", 2, now)
    lease.acquire(store, "w", now=now)
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        route_status(SqliteStore.over(store), rs, now)
    finally:
        store.conn.set_trace_callback(None)
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert any("FROM events" in s for s in selects) and any("FROM dead_letters" in s for s in selects)
    for sql in selects:
        plan = " | ".join(str(r[3]) for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        for table in ("events", "dead_letters", "retries"):
            assert f"SCAN {table}" not in plan, f"{sql} -> {plan}"


# --------------------------------------------------------------------------- CLI


def test_cli_status_without_routes_file_shows_cursors(tmp_path: Path) -> None:
    db = str(tmp_path / "ev.db")
    with Store(db) as s:
        publish(s, 3)
        cursors.ensure(s, [("inventory", "default", "earliest")])
    missing = str(tmp_path / "nope.yaml")
    code, out, err = run("--db", db, "--routes", missing, "status")
    assert code == 0, err
    assert "worker: not running" in out
    assert "inventory" in out and "(not in routes file)" in out
    assert "does not exist" in err
    code, out, _ = run("--db", db, "--routes", missing, "status", "--json")
    doc = json.loads(out)
    assert doc["routes"][0]["name"] == "inventory" and doc["routes"][0]["lag"] == 3


def test_cli_status_missing_database_is_an_error(tmp_path: Path) -> None:
    code, _, err = run("--db", str(tmp_path / "none.db"), "--routes", str(tmp_path / "r.yaml"), "status")
    assert code == 1
    assert err.startswith("Error: database") and "does not exist" in err
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- CLI with a real routes file

ROUTES_YAML = """\
settings:
  retention: PT1H
routes:
  - name: inventory
    filter: {type: order.placed}
    subscriber: http://127.0.0.1:9/inventory?key=${INV_KEY}
    start: earliest
  - name: audit
    filters:
      - prefix: {type: audit.}
    subscriber: {command: [python3, -c, "pass"]}
    start: earliest
"""
SECRET = "inv-key-d41d8cd98f"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("INV_KEY", SECRET)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES_YAML)
    return str(tmp_path / "ev.db"), str(routes)


def test_cli_status_masks_secrets_and_lists_removed_cursors(files: tuple[str, str]) -> None:
    db, routes = files
    with Store(db) as s:
        publish(s, 4)
        cursors.ensure(s, [("inventory", "default", "earliest"), ("audit", "default", "earliest")])
        cursors.ensure(s, [("retired", "default", "earliest")])
        advance(s, "inventory", 3, delivered=2, failed=1, last_error=f"HTTP 401 for ?key={SECRET}")
    code, out, err = run("--db", db, "--routes", routes, "status")
    assert code == 0, err
    assert SECRET not in out + err
    assert "http://127.0.0.1:9/inventory?key=***" in out and "HTTP 401 for ?key=***" in out
    assert "retired" in out and "removed (cursor kept)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert lines["inventory"].split()[3:5] == ["3", "1"]  # cursor, lag
    code, out, err = run("--db", db, "--routes", routes, "status", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert SECRET not in out
    assert [r["name"] for r in doc["routes"]] == ["inventory", "audit", "retired"]
    assert doc["routes"][0]["subscriber"] == "http://127.0.0.1:9/inventory?key=***"
    assert doc["routes"][1]["subscriber"] == "python3 -c pass"
    assert doc["routes"][2]["subscriber"] is None
    assert doc["worker"] == {"state": "not running", "pid": None, "since": None}


def test_cli_status_with_an_invalid_routes_file_still_answers(files: tuple[str, str]) -> None:
    db, routes = files
    Path(routes).write_text("routes:\n  - name: Bad Name\n")
    with Store(db) as s:
        cursors.ensure(s, [("inventory", "default", "earliest")])
    code, out, err = run("--db", db, "--routes", routes, "status")
    assert code == 0
    assert "warning: routes file has" in err and "(not in routes file)" in out


def test_trace_with_real_filters(files: tuple[str, str]) -> None:
    from evroute.routes.load import load_routes

    db, routes = files
    rs = load_routes(routes)
    with Store(db) as s:
        [seq] = publish(s, 1)
        cursors.ensure(s, [(r.name, r.broker, r.start) for r in rs.routes])
        advance(s, "inventory", seq)
        doc = trace_event(SqliteStore.over(s), rs, "e0")
    states = {e["route"]: e for e in doc["routes"]}
    assert states["inventory"]["state"] == "delivered"
    assert states["audit"]["state"] == "filtered"
    assert states["audit"]["failed_filter"] == rs.routes[1].matcher.explain(doc["event"])
    assert "audit." in states["audit"]["failed_filter"]


def test_cli_gc_runs_retention_once(files: tuple[str, str]) -> None:
    db, routes = files
    with Store(db) as s:
        old = publish(s, 5)
        s.conn.execute("UPDATE events SET published_at = published_at - 7200")
        publish(s, 2, prefix="new")
        cursors.ensure(s, [("inventory", "default", "earliest"), ("audit", "default", "earliest")])
        advance(s, "inventory", 7)
        advance(s, "audit", 7)
        retries.schedule(s, [Retry("inventory", old[0], 1, time.time() + 60, None, 500, "x", None)])
    code, out, err = run("--db", db, "--routes", routes, "gc")
    assert code == 0, err
    assert out.strip() == "deleted 4 events older than PT1H that every route has passed"
    code, out, err = run("--db", db, "--routes", routes, "gc", "--json")
    assert json.loads(out) == {"deleted": 0, "retention": "PT1H"}
    Path(routes).write_text(ROUTES_YAML.replace("  retention: PT1H\n", "  durability: normal\n"))
    code, out, _ = run("--db", db, "--routes", routes, "gc")
    assert code == 0 and "settings.retention is not set" in out
    code, _, err = run("--db", db, "--routes", routes + ".missing", "gc")
    assert code == 2 and err.startswith("Error:")


def test_cli_events_show_json_and_human(files: tuple[str, str]) -> None:
    db, routes = files
    now = time.time()
    with Store(db) as s:
        [first, second] = publish(s, 2)
        publish(s, 1, broker="other", prefix="e")  # a second event with id e0, newer
        cursors.ensure(s, [("inventory", "default", "earliest"), ("audit", "default", "earliest")])
        retries.schedule(s, [Retry("inventory", first, 2, now + 90, now - 5, 503, "HTTP 503", None)])
        advance(s, "inventory", first)
    code, out, err = run("--db", db, "--routes", routes, "events", "show", str(first), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["seq"], doc["broker"], doc["event"]["id"]) == (first, "default", "e0")
    assert [(e["route"], e["state"]) for e in doc["routes"]] == [
        ("inventory", "retrying"),
        ("audit", "filtered"),
    ]
    code, out, err = run("--db", db, "--routes", routes, "events", "show", str(first))
    assert code == 0, err
    assert out.startswith(f"event e0 (seq {first}, broker default, published ")
    assert "retrying" in out and "2 attempts made; next in 1m" in out and "last error: HTTP 503" in out
    assert "filter did not match: filters[0]" in out
    code, out, err = run("--db", db, "--routes", routes, "events", "show", "e1")
    assert f"event e1 (seq {second}" in out and "pending" in out and "not yet dispatched" in out
    # e0 exists in two brokers: the newest is shown, and the output says so.
    code, out, err = run("--db", db, "--routes", routes, "events", "show", "e0")
    assert code == 0, err
    assert "broker other" in out.splitlines()[0]
    assert f"note: 2 events have id 'e0'; showing the newest. Others: seq {first} (broker default" in out
    assert "no route of broker other in the routes file" in out
    code, out, err = run("--db", db, "--routes", routes, "events", "show", "nope")
    assert code == 2 and err.strip() == "Error: no event with id or seq 'nope' (see `evroute events list`)"


def test_status_of_a_running_worker_process(tmp_path: Path) -> None:
    """A real `evroute worker` delivering to a command sink: status sees it running, then stopped."""
    import signal
    import subprocess
    import sys

    db, routes = str(tmp_path / "ev.db"), tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: sink, subscriber: {command: ['true']}, start: earliest}\n")
    with Store(db) as s:
        publish(s, 3)
    environ = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "evroute", "--db", db, "--routes", str(routes), "worker", "-q"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 30
        doc: dict[str, Any] = {}
        while time.time() < deadline and worker.poll() is None:
            code, out, _ = run("--db", db, "--routes", str(routes), "status", "--json")
            doc = json.loads(out) if code == 0 else {}
            if doc and doc["worker"]["state"] == "running" and doc["routes"][0]["delivered"] == 3:
                break
            time.sleep(0.05)
        assert worker.poll() is None, worker.communicate()[1]
        assert doc["worker"]["pid"] == worker.pid, doc
        assert doc["routes"][0]["cursor"] == 3 and doc["routes"][0]["lag"] == 0
        code, out, _ = run("--db", db, "--routes", str(routes), "status")
        assert out.startswith(f"worker: running, pid {worker.pid} on ")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
    code, out, _ = run("--db", db, "--routes", str(routes), "status", "--json")
    assert json.loads(out)["worker"] == {"state": "not running", "pid": None, "since": None}
