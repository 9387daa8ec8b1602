"""Retention against a real SQLite file: what goes, what stays, and a bounded log under steady traffic."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evroute.cloudevent import make_event
from evroute.retention import collect
from evroute.routes.model import Route, RouteSet, Settings
from evroute.store import Store, cursors, deadletters, retries
from evroute.store import log as event_log
from evroute.store.cursors import Progress
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store(str(tmp_path / "ev.db"))
    yield s
    s.close()


def routeset(*routes: Route, retention: float | None = HOUR) -> RouteSet:
    return RouteSet(routes=routes, settings=Settings(retention=retention))


def publish(store: Store, n: int, now: float, broker: str = "default", tag: str = "e") -> list[int]:
    events = [make_event(type="t", source="/s", id=f"{tag}-{i}", data=b"x" * 100) for i in range(n)]
    first = event_log.last_seq(store) + 1
    assert event_log.append(store, broker, events, now=now).stored == n
    return list(range(first, first + n))


def advance(store: Store, name: str, position: int) -> None:
    cursor = cursors.get(store, name)
    assert cursor is not None
    assert cursors.commit(store, [Progress(name, position, cursor.epoch)]) == []


def seqs(store: Store, broker: str | None = None) -> list[int]:
    sql = "SELECT seq FROM events" + (" WHERE broker = ?" if broker else "") + " ORDER BY seq"
    return [r[0] for r in store.conn.execute(sql, (broker,) if broker else ())]


def test_deletes_old_passed_events_and_keeps_what_is_needed(store: Store) -> None:
    start = time.time() - 3 * HOUR
    rs = routeset(Route("a", start="earliest"), Route("b", start="earliest"))
    old = publish(store, 20, start)
    young = publish(store, 5, time.time(), tag="y")
    cursors.ensure(store, [("a", "default", "earliest"), ("b", "default", "earliest")])
    advance(store, "a", young[-1])
    advance(store, "b", old[14])  # b has not passed old[15:]
    # a retry of old[3] still needs its event; old[5] was dead-lettered (its row keeps a copy).
    retries.schedule(store, [Retry("a", old[3], 1, time.time() + 60, start, 503, "HTTP 503", None)])
    stored = event_log.get(store, old[5])
    assert stored is not None
    [dlq_id] = deadletters.add(
        store,
        [
            NewDeadLetter(
                "b",
                "default",
                old[5],
                stored.event,
                4,
                500,
                "retries exhausted",
                "HTTP 500",
                None,
                start,
                start,
            )
        ],
    )

    deleted = collect(store, rs, time.time(), chunk=4)  # small chunks: several transactions
    assert deleted == 14
    assert seqs(store) == [old[3], *old[15:], *young]
    assert deadletters.get(store, dlq_id).event == stored.event
    # Nothing more to do until something changes.
    assert collect(store, rs, time.time()) == 0


def test_nothing_is_deleted_without_retention(store: Store) -> None:
    publish(store, 5, time.time() - 10 * HOUR)
    cursors.ensure(store, [("a", "default", "earliest")])
    advance(store, "a", 5)
    assert collect(store, routeset(Route("a"), retention=None), time.time()) == 0
    assert len(seqs(store)) == 5


def test_limit_bounds_one_pass(store: Store) -> None:
    publish(store, 30, time.time() - 2 * HOUR)
    cursors.ensure(store, [("a", "default", "earliest")])
    advance(store, "a", 30)
    rs = routeset(Route("a"))
    assert collect(store, rs, time.time(), limit=12, chunk=5) == 12
    assert collect(store, rs, time.time(), limit=None, chunk=5) == 18
    assert seqs(store) == []


def test_routes_of_the_file_decide_not_removed_cursors(store: Store) -> None:
    past = time.time() - 2 * HOUR
    publish(store, 10, past)
    cursors.ensure(store, [("a", "default", "earliest"), ("removed", "default", "earliest")])
    advance(store, "a", 10)
    # "removed" is at 0 but no longer in the file: it holds nothing back.
    assert collect(store, routeset(Route("a")), time.time()) == 10


def test_a_new_route_starting_earliest_holds_everything(store: Store) -> None:
    past = time.time() - 2 * HOUR
    publish(store, 10, past)
    cursors.ensure(store, [("a", "default", "earliest")])
    advance(store, "a", 10)
    assert collect(store, routeset(Route("a"), Route("new", start="earliest")), time.time()) == 0
    assert collect(store, routeset(Route("a"), Route("new", start="latest")), time.time()) == 10


def test_a_paused_route_holds_its_backlog(store: Store) -> None:
    publish(store, 10, time.time() - 2 * HOUR)
    cursors.ensure(store, [("a", "default", "earliest"), ("p", "default", "earliest")])
    advance(store, "a", 10)
    advance(store, "p", 4)
    assert collect(store, routeset(Route("a"), Route("p", paused=True)), time.time()) == 4
    assert seqs(store) == list(range(5, 11))


def test_brokers_are_independent(store: Store) -> None:
    past = time.time() - 2 * HOUR
    mine = publish(store, 5, past, broker="orders", tag="o")
    nobody = publish(store, 5, past, broker="audit", tag="a")
    theirs = publish(store, 5, past, broker="billing", tag="b")
    cursors.ensure(store, [("o", "orders", "earliest"), ("b", "billing", "earliest")])
    advance(store, "o", mine[-1])  # past every seq of every broker
    rs = routeset(Route("o", broker="orders"), Route("b", broker="billing"))
    # orders: passed; audit: no route reads it (kept for the retention only); billing: not passed.
    assert collect(store, rs, time.time()) == 10
    assert seqs(store) == theirs
    del nobody


def test_steady_traffic_keeps_the_log_bounded(store: Store) -> None:
    """Publish, let the worker pass the events, collect: the log stays at a few batches."""
    rs = routeset(Route("a", start="earliest"), Route("b", start="earliest"), retention=10.0)
    cursors.ensure(store, [("a", "default", "earliest"), ("b", "default", "earliest")], now=0.0)
    clock = 1_000_000.0
    sizes = []
    for round_ in range(20):
        batch = publish(store, 50, clock, tag=f"r{round_}")
        advance(store, "a", batch[-1])
        advance(store, "b", batch[-10])  # b trails a little
        collect(store, rs, clock)
        sizes.append(store.conn.execute("SELECT count(*) FROM events").fetchone()[0])
        clock += 5.0
    assert max(sizes[5:]) <= 160, sizes
    assert sizes[-1] == sizes[-5], sizes  # steady state
