"""The SQLite store (evroute.store): log, cursors, retries, dead letters, lease, schema.

Every test uses a real database file under tmp_path (WAL needs a file); the concurrency
test runs real ``evroute publish`` processes against one file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evroute.cloudevent import make_event
from evroute.errors import StoreError
from evroute.store import Store, cursors, deadletters, lease, log, retries
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry
from evroute.store.schema import _STATEMENTS_V1, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store(str(tmp_path / "ev.db")) as s:
        yield s


def ev(i: int | str, source: str = "/shop", type: str = "order.placed", **kw: object):  # type: ignore[no-untyped-def]
    return make_event(type=type, source=source, id=str(i), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- log
# (append, dedup, listing: tests/contract/test_contract_log.py, for every store)


def test_read_after_pages_by_seq_and_knows_its_brokers(store: Store) -> None:
    log.append(store, "default", [ev(1), ev(2)])
    log.append(store, "other", [ev(3)])
    log.append(store, "default", [ev(4)])
    assert [s.seq for s in log.read_after(store, "default", 0)] == [1, 2, 4]
    assert [s.seq for s in log.read_after(store, "default", 2)] == [4]
    assert [s.seq for s in log.read_after(store, "default", 0, limit=1)] == [1]
    assert log.count_after(store, "default", 1) == 2
    assert sorted(log.brokers(store)) == ["default", "other"]


def test_seq_is_never_reused_after_deleting_the_newest_row(store: Store) -> None:
    log.append(store, "default", [ev(i) for i in range(3)])
    assert log.last_seq(store) == 3
    with store.write() as conn:
        conn.execute("DELETE FROM events WHERE seq = 3")
    store.close()
    reopened = Store(store.path)
    result = log.append(reopened, "default", [ev("new")])
    assert result.seqs == (4,)
    assert log.last_seq(reopened) == 4
    reopened.close()


def test_insert_inside_a_transaction_rolls_back_with_it(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write():
        assert log.insert(store, "default", [ev(i) for i in range(100)], 1.0) == 100
        raise RuntimeError("abort")
    assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    with store.write():
        assert log.insert(store, "default", [ev(1), ev(1), ev(2)], 1.0) == 2


def test_eight_processes_publishing_at_once_store_everything(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    files = []
    for p in range(8):
        path = tmp_path / f"p{p}.jsonl"
        with path.open("w") as fh:
            for i in range(1000):
                obj = {"specversion": "1.0", "id": str(i), "source": f"/p{p}", "type": "t", "data": {"i": i}}
                fh.write(json.dumps(obj) + "\n")
        files.append(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The database does not exist yet: the eight also race to create the schema.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evroute",
                "--db",
                str(db),
                "--routes",
                str(tmp_path / "none.yaml"),
                "publish",
                "--file",
                str(f),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        for f in files
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert (proc.returncode, out.decode().strip(), err.decode()) == (0, "stored 1000, duplicates 0", "")
    with Store(str(db)) as s:
        assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 8000
        assert s.conn.execute("SELECT count(DISTINCT seq) FROM events").fetchone()[0] == 8000
        per_source = dict(s.conn.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
        assert per_source == {f"/p{p}": 1000 for p in range(8)}
        # Each process's events are contiguous: one transaction each.
        for p in range(8):
            lo, hi = s.conn.execute(
                "SELECT min(seq), max(seq) FROM events WHERE source = ?", (f"/p{p}",)
            ).fetchone()
            assert hi - lo == 999


# --------------------------------------------------------------------------- cursors
# (start, epoch-guarded commits, reset, forget: tests/contract/test_contract_positions.py)


def test_cursor_epochs_count_every_move(store: Store) -> None:
    log.append(store, "default", [ev(i) for i in range(3)])
    assert cursors.ensure(store, [("r", "default", "earliest")], now=10.0) == ["r"]
    c = cursors.get(store, "r")
    assert c is not None and (c.epoch, c.created_at) == (0, 10.0)
    for to in ("latest", "2", "earliest"):
        cursors.reset(store, "r", to)
    assert cursors.get(store, "r").epoch == 3  # type: ignore[union-attr]


# --------------------------------------------------------------------------- retries


def test_retry_upsert_keeps_the_larger_attempt(store: Store) -> None:
    retries.schedule(store, [Retry("r", 7, 3, 100.0, 50.0, 503, "busy", None)])
    retries.schedule(store, [Retry("r", 7, 2, 200.0, 60.0, 500, "again", None)])
    r = retries.get(store, "r", 7)
    assert r is not None
    assert (r.attempt, r.due_at, r.first_failed_at, r.last_status, r.last_error) == (
        3,
        200.0,
        50.0,
        500,
        "again",
    )
    retries.schedule(
        store, [Retry("r", 8, 1, 150.0, 1.0, None, None, None), Retry("q", 1, 1, 10.0, 1.0, None, None, None)]
    )
    assert [(x.route, x.seq) for x in retries.due(store, 160.0, ["r", "q"])] == [("q", 1), ("r", 8)]
    assert retries.next_due(store, ["r"]) == 150.0
    assert retries.summary(store) == {"r": (2, 150.0), "q": (1, 10.0)}
    retries.remove(store, [("r", 7), ("q", 1)])
    assert retries.count(store) == 1 and retries.count(store, ["q"]) == 0


# --------------------------------------------------------------------------- dead letters


def _letter(route: str, seq: int | None, dead_at: float = 100.0) -> NewDeadLetter:
    event = ev(f"e{seq}", data=b'{"x":1}', datacontenttype="application/json")
    return NewDeadLetter(
        route, "default", seq, event, 4, 503, "retries exhausted", "HTTP 503", b"busy", 10.0, dead_at
    )


def test_replay_puts_a_due_retry_row_on_the_schedule(store: Store) -> None:
    """(Listing, counts and purge: tests/contract/test_contract_dead_letters.py.)"""
    retries.schedule(store, [Retry("pay", 1, 3, 50.0, 10.0, 503, "busy", None)])
    ids = deadletters.add(store, [_letter("pay", 1, 100.0), _letter("inv", None, 300.0)])
    assert retries.get(store, "pay", 1) is None  # the retry row went with it
    assert deadletters.replay(store, [ids[0], ids[1]], now=500.0) == 2
    replayed = retries.get(store, "pay", 1)
    assert replayed is not None and (replayed.attempt, replayed.due_at, replayed.dlq_id) == (0, 500.0, ids[0])
    # A dead letter without a log seq replays under a negative key of its own.
    assert retries.get(store, "inv", -ids[1]) is not None


# --------------------------------------------------------------------------- lease


def test_lease_acquire_renew_expiry_takeover(store: Store) -> None:
    assert lease.acquire(store, "a", now=100.0)
    assert not lease.acquire(store, "b", now=101.0)
    assert lease.renew(store, "a", now=104.0)
    assert not lease.acquire(store, "b", now=104.0 + lease.TTL - 0.5)
    held = lease.current(store)
    assert held is not None and (held.holder, held.since, held.heartbeat) == ("a", 100.0, 104.0)
    assert held.alive(105.0) and not held.alive(104.0 + lease.TTL)
    # a died: its heartbeat is older than the TTL, so b takes over.
    assert lease.acquire(store, "b", now=104.0 + lease.TTL + 0.1)
    assert not lease.renew(store, "a", now=111.0)
    assert lease.acquire(store, "b", now=112.0)  # re-acquiring one's own lease keeps `since`
    assert lease.current(store).since == 104.0 + lease.TTL + 0.1  # type: ignore[union-attr]
    lease.release(store, "a")  # not the holder: no effect
    assert lease.current(store) is not None
    lease.release(store, "b")
    assert lease.current(store) is None


# --------------------------------------------------------------------------- schema


def _tables(path: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_schema_created_in_an_empty_file_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with Store(str(path)) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert int(s.conn.execute("PRAGMA busy_timeout").fetchone()[0]) >= 5000
        log.append(s, "default", [ev(1)])
    tables = _tables(str(path))
    assert {"events", "cursors", "retries", "dead_letters", "lease", "routes_cache"} <= tables
    for _ in range(2):
        with Store(str(path)) as s:
            assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert _tables(str(path)) == tables
    with sqlite3.connect(path) as conn:
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY name")]
    assert applied == ["0001_initial", "0002_routes_cache", "0003_attempts", "0004_route_pace"]


def test_schema_upgrade_from_the_first_version_keeps_the_data(tmp_path: Path) -> None:
    from sqlite_utils import Database, Migrations

    path = str(tmp_path / "v1.db")
    old = Migrations("evroute")

    @old(name="0001_initial")
    def initial(db: Database) -> None:
        for statement in _STATEMENTS_V1:
            db.execute(statement)

    conn = sqlite3.connect(path)
    old.apply(Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO events (broker, id, source, type, published_at) VALUES ('default', '1', '/s', 't', 1.0)"
    )
    conn.commit()
    conn.close()
    assert "routes_cache" not in _tables(path)

    with Store(path) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [e.event.id for e in log.read_after(s, "default", 0)] == ["1"]
        assert log.append(s, "default", [ev(2)]).seqs == (2,)
    assert {"routes_cache", "attempts", "outcomes"} <= _tables(path)


def test_store_refuses_paths_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store(str(tmp_path / "missing.db"), create=False)
    with pytest.raises(StoreError, match=r"folder .* does not exist"):
        Store(str(tmp_path / "no" / "such" / "ev.db"))
    with pytest.raises(StoreError, match="cannot open database"):
        Store(str(tmp_path))  # a folder is not a database file
    assert not (tmp_path / "missing.db").exists()
