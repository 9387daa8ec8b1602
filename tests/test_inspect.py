"""`evroute status` and `evroute events show`: state written the way a worker writes it, read back."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import json_event
from helpers import run_cli as run

from evroute.clock import parse_time
from evroute.errors import NotFound
from evroute.inspect import route_status, trace_event
from evroute.routes.model import Matcher, Route, RouteSet, Subscriber
from evroute.store import Store, cursors, deadletters, lease, retries
from evroute.store import log as event_log
from evroute.store.cursors import Progress
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry

STATUS_KEYS = {
    "name",
    "broker",
    "subscriber",
    "cursor",
    "lag",
    "in_flight",
    "retrying",
    "next_retry_due",
    "dead_letters",
    "delivered",
    "failed",
    "last_error",
    "paused",
    "breaker",
    "throttled",
    "scheduled",
    "endpoints",
}
TRACE_ROUTE_KEYS = {
    "route",
    "state",
    "attempt",
    "next_due",
    "last_error",
    "dlq_id",
    "failed_filter",
    "attempts",
    "due",
}


def exact(**want: str) -> Matcher:
    """A Knative attributes filter as the routes loader builds it: exact match, names the failed part."""

    def explain(attrs: Mapping[str, object]) -> str | None:
        for key, value in want.items():
            if attrs.get(key) != value:
                return f"filter {key}={value!r} (event has {attrs.get(key)!r})"
        return None

    return Matcher(lambda a: explain(a) is None, explain, " and ".join(f"{k}={v}" for k, v in want.items()))


def route(name: str, broker: str = "default", **kw: Any) -> Route:
    kw.setdefault("subscriber", Subscriber(uri=f"http://127.0.0.1:9/{name}"))
    return Route(name=name, broker=broker, start="earliest", **kw)


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


def build_every_state(store: Store, now: float) -> tuple[RouteSet, int]:
    """One event (seq 1) in every state, one route each; plus a route on another broker."""
    rs = RouteSet(
        routes=(
            route("done", matcher=exact(type="order.placed")),
            route("waiting"),
            route("flaky"),
            route("gave-up"),
            route("audit", matcher=exact(type="audit.logged")),
            route("held", paused=True),
            route("elsewhere", broker="other"),
        )
    )
    [seq, _second] = publish(store, 2)
    cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes], now=now)
    advance(store, "done", 2, delivered=2)
    advance(store, "audit", 2)
    # flaky: the first attempt failed, the retry row holds it; the watermark moved past it.
    retries.schedule(
        store, [Retry("flaky", seq, 1, now + 30, now - 1, 503, "HTTP 503 Service Unavailable", None)]
    )
    advance(store, "flaky", 2, failed=1, last_error="HTTP 503 Service Unavailable", last_error_at=now - 1)
    dlq_id = dead(store, "gave-up", seq, now)
    advance(store, "gave-up", 2, failed=4)
    return rs, dlq_id


def test_events_show_reports_every_state_with_the_exact_json_shape(store: Store) -> None:
    now = time.time()
    rs, dlq_id = build_every_state(store, now)
    doc = trace_event(store, rs, "e0")
    assert set(doc) == {"seq", "broker", "published_at", "event", "routes"}
    assert doc["seq"] == 1 and doc["broker"] == "default"
    assert doc["published_at"].endswith("Z") and parse_time(doc["published_at"]) == pytest.approx(now, abs=60)
    assert doc["event"]["id"] == "e0" and doc["event"]["data"] == {"n": 0}
    for entry in doc["routes"]:
        assert set(entry) == TRACE_ROUTE_KEYS
    states = {e["route"]: e for e in doc["routes"]}
    assert "elsewhere" not in states  # routes on other brokers are not listed
    assert [e["route"] for e in doc["routes"]] == ["done", "waiting", "flaky", "gave-up", "audit", "held"]
    assert states["done"] == dict.fromkeys(TRACE_ROUTE_KEYS) | {
        "route": "done",
        "state": "delivered",
        "attempts": [],
    }
    assert states["waiting"]["state"] == "pending"
    flaky = states["flaky"]
    assert flaky["state"] == "retrying" and flaky["attempt"] == 1
    assert parse_time(flaky["next_due"]) == pytest.approx(now + 30, abs=0.01)
    assert flaky["last_error"] == "HTTP 503 Service Unavailable" and flaky["dlq_id"] is None
    gave_up = states["gave-up"]
    assert gave_up["state"] == "dead" and gave_up["dlq_id"] == dlq_id and gave_up["attempt"] == 4
    assert gave_up["last_error"] == "HTTP 503"
    assert states["audit"]["state"] == "filtered"
    assert states["audit"]["failed_filter"] == "filter type='audit.logged' (event has 'order.placed')"
    assert states["held"]["state"] == "paused"
    # The same event by seq gives the same document.
    assert trace_event(store, rs, "1") == doc


def test_events_show_replayed_dead_letter_is_retrying_with_its_dlq_id(store: Store) -> None:
    now = time.time()
    rs = RouteSet(routes=(route("pay"),))
    [seq] = publish(store, 1)
    cursors.ensure(store, [("pay", "default", "earliest")])
    dlq_id = dead(store, "pay", seq, now)
    advance(store, "pay", seq)
    assert trace_event(store, rs, str(seq))["routes"][0]["state"] == "dead"
    deadletters.replay(store, [dlq_id], now=now)
    entry = trace_event(store, rs, str(seq))["routes"][0]
    assert entry["state"] == "retrying" and entry["attempt"] == 0 and entry["dlq_id"] == dlq_id


def test_events_show_picks_the_newest_of_an_id_in_several_brokers(store: Store) -> None:
    rs = RouteSet(routes=(route("a"), route("b", broker="other")))
    publish(store, 1, broker="default", prefix="dup")
    [newest] = publish(store, 1, broker="other", prefix="dup")
    cursors.ensure(store, [("a", "default", "earliest"), ("b", "other", "earliest")])
    doc = trace_event(store, rs, "dup0")
    assert doc["seq"] == newest and doc["broker"] == "other"
    assert [e["route"] for e in doc["routes"]] == ["b"]


def test_events_show_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no event with id or seq 'nope'"):
        trace_event(store, RouteSet(), "nope")
    with pytest.raises(NotFound):
        trace_event(store, RouteSet(), "999")


def test_events_show_after_retention_uses_the_dead_letter_copy(store: Store) -> None:
    now = time.time()
    [seq] = publish(store, 1)
    cursors.ensure(store, [("pay", "default", "earliest")])
    dlq_id = dead(store, "pay", seq, now)
    with store.write() as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    doc = trace_event(store, RouteSet(routes=(route("pay"),)), "e0")
    assert doc["seq"] == seq and doc["published_at"] is None and doc["event"]["id"] == "e0"
    assert doc["routes"][0]["state"] == "dead" and doc["routes"][0]["dlq_id"] == dlq_id


# --------------------------------------------------------------------------- status


def test_status_json_shape_and_values(store: Store) -> None:
    now = time.time()
    secret = "tok-5ecret-value"
    rs = RouteSet(
        routes=(
            route("inventory"),
            route(
                "payment",
                subscriber=Subscriber(uri=f"http://127.0.0.1:9/pay?key={secret}"),
                secrets=frozenset({secret}),
                paused=True,
            ),
            route("fresh", broker="other"),
        )
    )
    publish(store, 10)
    cursors.ensure(store, [("inventory", "default", "earliest"), ("payment", "default", "earliest")])
    cursors.ensure(store, [("old-route", "default", "earliest")])
    advance(store, "inventory", 7, delivered=6, in_flight=2, breaker="open")
    retries.schedule(store, [Retry("inventory", 3, 2, now + 5, now - 10, 500, "HTTP 500", None)])
    retries.schedule(store, [Retry("inventory", 4, 1, now + 2, now - 10, 500, "HTTP 500", None)])
    advance(
        store, "payment", 4, failed=1, last_error=f"connection refused to ?key={secret}", last_error_at=now
    )
    dead(store, "payment", 2, now)
    dead(store, "payment", 3, now)
    assert lease.acquire(store, "w1", now=now - 100)
    assert lease.renew(store, "w1", now=now - 1)

    doc = route_status(store, rs, now)
    assert set(doc) == {"worker", "routes"}
    assert doc["worker"] == {"state": "running", "pid": os.getpid(), "since": doc["worker"]["since"]}
    assert parse_time(doc["worker"]["since"]) == pytest.approx(now - 100, abs=0.01)
    for row in doc["routes"]:
        assert set(row) == STATUS_KEYS
    rows = {r["name"]: r for r in doc["routes"]}
    assert [r["name"] for r in doc["routes"]] == ["inventory", "payment", "fresh", "old-route"]
    inv = rows["inventory"]
    assert (inv["cursor"], inv["lag"], inv["in_flight"], inv["breaker"]) == (7, 3, 2, "open")
    assert inv["retrying"] == 2 and parse_time(inv["next_retry_due"]) == pytest.approx(now + 2, abs=0.01)
    assert (inv["delivered"], inv["failed"], inv["dead_letters"], inv["paused"]) == (6, 0, 0, False)
    pay = rows["payment"]
    assert pay["subscriber"] == "http://127.0.0.1:9/pay?key=***"
    assert pay["last_error"] == "connection refused to ?key=***"
    assert secret not in json.dumps(doc)
    assert (pay["cursor"], pay["lag"], pay["dead_letters"], pay["paused"]) == (4, 6, 2, True)
    assert pay["retrying"] == 0 and pay["next_retry_due"] is None
    fresh = rows["fresh"]
    assert (fresh["cursor"], fresh["lag"], fresh["subscriber"]) == (None, None, "http://127.0.0.1:9/fresh")
    old = rows["old-route"]
    assert (old["subscriber"], old["paused"], old["cursor"], old["lag"]) == (None, None, 0, 10)


def test_status_without_a_live_worker(store: Store) -> None:
    now = time.time()
    cursors.ensure(store, [("a", "default", "earliest")])
    advance(store, "a", 0, in_flight=5, breaker="open")
    doc = route_status(store, RouteSet(routes=(route("a"),)), now)
    assert doc["worker"] == {"state": "not running", "pid": None, "since": None}
    assert doc["routes"][0]["in_flight"] == 0 and doc["routes"][0]["breaker"] == "closed"
    # A lease whose heartbeat is older than the TTL belongs to a dead worker.
    assert lease.acquire(store, "w1", now=now - lease.TTL - 1)
    assert route_status(store, RouteSet(), now)["worker"]["state"] == "not running"


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
        route_status(store, rs, now)
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
        doc = trace_event(s, rs, "e0")
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
