"""Attempt history and the recent-outcomes ring, written by a real engine against real
loopback receivers and a real SQLite file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from test_worker import drain, prepare, publish, routes_of

from evroute.cli import cli
from evroute.inspect import trace_event
from evroute.retention import collect
from evroute.routes.load import load_routes_text
from evroute.store import Store, attempts, deadletters, outcomes
from evroute.store.attempts import Attempt

from receiver import Reply


def test_first_try_successes_write_no_attempt_rows_but_reach_the_ring(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = routes_of(tmp_path, f"routes:\n  - {{name: fast, subscriber: '{sink.url}/'}}\n")
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 5)
    drain(db, rs)
    with Store(db) as store:
        assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
        ring = outcomes.newest(store, 100)
    assert sorted(o.id for o in ring) == sorted(ids)
    assert {(o.route, o.outcome, o.status, o.attempt) for o in ring} == {("fast", "delivered", 200, 1)}
    assert all(o.latency_ms is not None and o.latency_ms >= 0 for o in ring)
    assert [o.n for o in ring] == sorted(o.n for o in ring)


def test_failed_then_delivered_keeps_every_attempt_in_order(tmp_path: Path, receivers, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLAKY_TOKEN", "s3cr3t-value")
    calls = {"n": 0}

    def flaky(_r):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return Reply(503, b"busy, token s3cr3t-value") if calls["n"] <= 2 else Reply(200)

    sink = receivers(flaky)
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: flaky
            subscriber: '{sink.url}/'
            headers: {{Authorization: "Bearer ${{FLAKY_TOKEN}}"}}
            delivery: {{retry: 3, backoffDelay: 50ms, backoffPolicy: linear}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    drain(db, rs)
    with Store(db) as store:
        doc = trace_event(store, rs, event_id)
        rows = attempts.for_seq(store, 1)
    [entry] = doc["routes"]
    assert entry["state"] == "delivered"
    timeline = entry["attempts"]
    assert [a["attempt"] for a in timeline] == [1, 2, 3]
    assert [a["status"] for a in timeline] == [503, 503, 200]
    assert [a["error"] for a in timeline] == ["HTTP 503", "HTTP 503", None]
    assert all(set(a) == {"attempt", "at", "duration_ms", "status", "error", "endpoint"} for a in timeline)
    assert all(a["endpoint"] == f"{sink.url}/" for a in timeline)
    assert timeline[0]["at"] <= timeline[1]["at"] <= timeline[2]["at"]
    # The body excerpt is kept, with the route's secrets masked.
    assert rows[0].body == b"busy, token ***"
    assert [r.outcome for r in rows] == ["retriable", "retriable", "success"]


def test_dead_letter_and_its_replay_extend_the_timeline(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    state = {"up": False}
    sink = receivers(lambda r: Reply(200) if state["up"] else Reply(500, b"down"))
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: pay
            subscriber: '{sink.url}/'
            delivery: {{retry: 1, backoffDelay: 20ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    drain(db, rs)
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert trace_event(store, rs, event_id)["routes"][0]["state"] == "dead"
        deadletters.replay(store, [letter.id])
    state["up"] = True
    drain(db, rs)
    with Store(db) as store:
        doc = trace_event(store, rs, event_id)
        ring = outcomes.newest(store)
    timeline = doc["routes"][0]["attempts"]
    # Two failed attempts, then the replay's first attempt (counted from 1 again) delivered.
    assert [(a["attempt"], a["status"]) for a in timeline] == [(1, 500), (2, 500), (1, 200)]
    assert [o.outcome for o in ring] == ["retrying", "dead", "delivered"]


def test_retention_deletes_the_history_with_its_event(tmp_path: Path) -> None:
    text = "settings: {retention: PT1S}\nroutes:\n  - {name: r, subscriber: 'http://127.0.0.1:9/'}\n"
    rs = load_routes_text(text, str(tmp_path / "routes.yaml"))
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 3)
    with Store(db) as store:
        store.conn.execute("UPDATE events SET published_at = published_at - 100 WHERE seq <= 2")
        store.conn.execute("UPDATE cursors SET position = 3")
        attempts.record(
            store,
            [
                Attempt("r", seq, 1, time.time(), 5.0, "retriable", 503, "HTTP 503", None, None)
                for seq in (1, 2, 3)
            ],
        )
        assert collect(store, rs, time.time()) == 2
        assert [a.seq for a in attempts.recent(store)] == [3]


def test_the_ring_stays_bounded(tmp_path: Path) -> None:
    with Store(str(tmp_path / "ev.db")) as store:
        pending = [(1.0, "r", i, 1, "delivered", 200, 1.0) for i in range(150)]
        for _ in range(3):
            with store.write() as conn:
                outcomes.insert(conn, pending)
        assert outcomes.last(store) == 450
        assert store.conn.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 450
        original = outcomes.RING
        outcomes.RING = 100
        try:
            with store.write() as conn:
                outcomes.insert(conn, pending)
        finally:
            outcomes.RING = original
        assert store.conn.execute("SELECT min(n), max(n), count(*) FROM outcomes").fetchone() == (
            451,
            550,
            100,
        )
        assert [o.n for o in outcomes.after(store, 540)] == list(range(541, 551))


def test_events_show_prints_the_timeline(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def once_down(_r):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return Reply(502) if calls["n"] == 1 else Reply(200)

    sink = receivers(once_down)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - {{name: svc, subscriber: '{sink.url}/', delivery: {{backoffDelay: 10ms}}}}\n"
    )
    rs = load_routes_text(routes.read_text(), str(routes))
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    drain(db, rs)
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db, "--routes", str(routes), "events", "show", event_id])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("attempts of route svc"))
    assert "#1" in lines[start + 1] and "502" in lines[start + 1] and "HTTP 502" in lines[start + 1]
    assert "#2" in lines[start + 2] and "200" in lines[start + 2]
    doc = json.loads(
        runner.invoke(cli, ["--db", db, "--routes", str(routes), "events", "show", event_id, "--json"]).output
    )
    assert [a["status"] for a in doc["routes"][0]["attempts"]] == [502, 200]


def test_a_stored_reply_is_linked_to_the_event_it_answered(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    from evroute.cloudevent import make_event, to_binary
    from evroute.console.data import Reader
    from evroute.store import links

    def reserve(r):  # type: ignore[no-untyped-def]
        headers, body = to_binary(make_event(type="order.reserved", source="/inv", id="r-" + r.ce_id))
        return Reply(200, body, headers)

    sink = receivers(reserve)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - {{name: inv, filter: {{type: order.placed}}, subscriber: '{sink.url}/'}}\n"
    )
    rs = load_routes_text(routes.read_text(), str(routes))
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 1)
    drain(db, rs)
    with Store(db) as store:
        parent, children = links.of(store, 1)
        assert parent is None and children == [links.Link(2, 1, "reply", "inv")]
        assert links.of(store, 2) == (links.Link(2, 1, "reply", "inv"), [])
    reader = Reader(db, str(routes))
    assert reader.event("1")["links"] == {
        "parent": None,
        "children": [{"seq": 2, "kind": "reply", "route": "inv"}],
    }
    assert reader.event("2")["links"]["parent"] == {"seq": 1, "kind": "reply", "route": "inv"}
