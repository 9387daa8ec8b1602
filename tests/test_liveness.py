"""The worker stays alive and fair: the lease in every mode, retries that cannot start block
no one, store faults never stop a loop, pauses and changes apply at the next event, and
`--once` exits. Real SQLite files, real loopback receivers; time is the engine's injected clock
wherever a wait would otherwise be real."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

from evroute.cloudevent import make_event
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters, lease, retries
from evroute.store import log as event_log
from evroute.store.opener import parse
from evroute.store.retries import Retry
from evroute.worker.engine import Engine

from receiver import Reply, Request


def routeset(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes_text(path.read_text(), str(path))


def put_events(db: str, n: int, *, start: int = 0, broker: str = "default") -> list[int]:
    events = [make_event(type="t", source="/s", id=f"e-{i}", data=b"{}") for i in range(start, start + n)]
    with Store(db) as store:
        before = event_log.last_seq(store)
        event_log.append(store, broker, events)
        return list(range(before + 1, event_log.last_seq(store) + 1))


def with_cursors(db: str, rs: Any) -> None:
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in rs.routes])


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def run(coro: Any, timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def receiver(receivers):  # type: ignore[no-untyped-def]
    return receivers


class Gate:
    """A receiver behaviour that holds each request until the test lets it through."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.open = threading.Event()
        self.inside = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, r: Request) -> Reply:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        self.open.wait(20)
        with self.lock:
            self.inside -= 1
        return Reply(self.status)


# ---------------------------------------------------------------------------------- the lease


def test_a_drain_keeps_its_lease_alive_and_a_second_worker_stays_out(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    from evroute.worker.runner import Runner, WorkerOptions

    gate = Gate()
    sink = receiver(gate)
    rs_text = f"""
        routes:
          - name: slow
            subscriber: {sink.url}/
            start: earliest
            delivery: {{concurrency: 1}}
        """
    routeset(tmp_path, rs_text)
    db = str(tmp_path / "ev.db")
    put_events(db, 3)
    clock = FakeClock()
    runner = Runner(
        WorkerOptions(store=parse(f"sqlite:{db}"), routes=str(tmp_path / "routes.yaml"), drain=True),
        clock=clock,
        heartbeat=0.02,
    )

    async def main() -> int:
        task = asyncio.ensure_future(runner.main())
        await until(lambda: len(sink.requests) == 1)
        with Store(db) as store:
            taken = lease.current(store)
            assert taken is not None
            clock.advance(lease.TTL + 1.5)  # the drain runs far longer than the lease's TTL
            await until(lambda: lease.current(store).heartbeat == clock.now)  # type: ignore[union-attr]
            # A second worker (`--once`, or a standby) finds the lease alive, not expired.
            assert not lease.acquire(store, "second", now=clock.now + 1.0)
        gate.open.set()
        return await task

    assert run(main()) == 0
    assert sorted(sink.ids()) == ["e-0", "e-1", "e-2"]


def test_cursor_retry_and_dead_letter_writes_stop_when_the_lease_is_lost(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(400 if r.ce_id == "e-5" else 200))
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    put_events(db, 3)

    async def main() -> None:
        store = Store(db)
        assert lease.acquire(store, "me")
        engine = Engine(store, rs, holder="me")
        await engine.start()
        try:
            await engine.run_until_idle(drain=True)
            assert cursors.get(store, "r").position == 3  # type: ignore[union-attr]
            with Store(db) as other:  # another worker took over (our heartbeat stalled)
                assert lease.acquire(other, "you", now=time.time() + lease.TTL + 1)
            put_events(db, 3, start=3)
            await until(lambda: engine.lease_lost.is_set())
        finally:
            await engine.stop()
            store.close()

    run(main())
    with Store(db) as store:
        assert cursors.get(store, "r").position == 3  # type: ignore[union-attr]
        assert deadletters.listing(store) == []
        assert retries.count(store) == 0


# ---------------------------------------------------------------------------------- retries


def test_due_retries_of_a_paused_route_do_not_starve_another_routes_retry(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver()
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: held
            subscriber: {sink.url}/held
            paused: true
          - name: live
            subscriber: {sink.url}/live
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    seqs = put_events(db, 1)
    clock = FakeClock()
    with Store(db) as store:
        rows = [
            Retry("held", 1000 + i, 1, clock.now - 100 + i * 0.01, None, 503, "x", None) for i in range(600)
        ]
        rows.append(Retry("live", seqs[0], 1, clock.now - 1, None, 503, "x", None))
        retries.schedule(store, rows)
        cursors.reset(store, "live", "latest")

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, clock=clock, once=True)
        await engine.start()
        try:
            await engine.run_until_idle(drain=False)
        finally:
            await engine.stop()
            store.close()

    run(main(), timeout=10)
    assert [r.path for r in sink.requests] == ["/live"]
    with Store(db) as store:
        assert retries.count(store, ["held"]) == 600 and retries.count(store, ["live"]) == 0


def test_a_due_retry_goes_before_the_rest_of_the_backlog(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    failed_once: set[str] = set()

    def behaviour(r: Request) -> Reply:
        if r.ce_id == "e-0" and r.ce_id not in failed_once:
            failed_once.add(r.ce_id)
            return Reply(503)
        return Reply(200, delay=0.03)

    sink = receiver(behaviour)
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: one
            subscriber: {sink.url}/
            start: earliest
            delivery: {{concurrency: 1, retry: 3, backoffDelay: 100ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    put_events(db, 24)
    with_cursors(db, rs)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    run(main())
    ids = sink.ids()
    assert sorted(set(ids)) == sorted(f"e-{i}" for i in range(24)) and ids.count("e-0") == 2
    # Due after 0.1 s (about four 30 ms deliveries): it takes the route's next free slot.
    assert ids.index("e-0", 1) <= 8, ids


@pytest.mark.parametrize("ordering", ["unordered", "ordered"])
def test_once_exits_while_a_breaker_is_open_with_due_retries(tmp_path: Path, receiver, ordering: str) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(503))
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: down
            subscriber: {sink.url}/
            start: earliest
            delivery: {{ordering: {ordering}, concurrency: 1, retry: 5, backoffDelay: 10ms,
                        circuitBreaker: {{consecutiveFailures: 1, cooldown: 1h}}}}
        """,
    )
    db = str(tmp_path / "ev.db")
    put_events(db, 3)
    with_cursors(db, rs)
    clock = FakeClock()
    with Store(db) as store:  # retries already due from an earlier run
        retries.schedule(store, [Retry("down", s, 1, clock.now - 5, None, 503, "x", None) for s in (1, 2)])

    async def main() -> str:
        store = Store(db)
        engine = Engine(store, rs, clock=clock, once=True)
        await engine.start()
        try:
            await engine.run_until_idle(drain=False)
            return engine.runtimes["down"].breaker.state
        finally:
            await engine.stop()
            store.close()

    assert run(main(), timeout=8) == "open"
    assert len(sink.requests) == 1  # one failure opened the breaker; nothing else was tried
    with Store(db) as store:
        assert cursors.get(store, "down").breaker == "open"  # type: ignore[union-attr]


def test_a_vanished_event_does_not_keep_the_breaker_half_open(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver()
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            delivery: {{retry: 5, circuitBreaker: {{consecutiveFailures: 1, cooldown: 10s}}}}
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    clock = FakeClock()

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, clock=clock)
        await engine.start()
        try:
            rt = engine.runtimes["r"]
            rt.breaker.failure(clock.now)  # the subscriber failed: open for 10 s
            assert rt.breaker.state == "open"
            # A retry whose event retention has since deleted.
            retries.schedule(store, [Retry("r", 999, 1, clock.now, None, 503, "x", None)])
            clock.advance(11)
            engine.notify()
            await until(lambda: retries.count(store) == 0)
            put_events(db, 1)
            engine.notify()
            await until(lambda: len(sink.requests) == 1)
            await until(lambda: rt.breaker.state == "closed")
        finally:
            await engine.stop()
            store.close()

    run(main())


def test_dlq_purge_also_drops_scheduled_replays(tmp_path: Path) -> None:
    db = str(tmp_path / "ev.db")
    put_events(db, 2)
    with Store(db) as store:
        ids = deadletters.add(
            store,
            [
                deadletters.NewDeadLetter(
                    "r",
                    "default",
                    s,
                    event_log.get(store, s).event,
                    1,
                    400,
                    "permanent failure",
                    "",
                    None,
                    1.0,
                    1.0,
                )  # type: ignore[union-attr]
                for s in (1, 2)
            ],
        )
        deadletters.replay(store, ids)
        assert retries.count(store) == 2
        assert deadletters.purge(store) == 2
        assert retries.count(store) == 0


# ---------------------------------------------------------------------------------- store faults


def test_a_failed_cursor_write_does_not_stop_later_commits(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver()
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    with Store(db) as store:
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON cursors BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    put_events(db, 5)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 5)
            await asyncio.sleep(0.3)  # several commit rounds fail
            with Store(db) as other:
                other.conn.execute("DROP TRIGGER refuse")
            await until(lambda: cursors.get(store, "r").position == 5)  # type: ignore[union-attr]
        finally:
            await engine.stop()
            store.close()

    run(main())


def test_an_outcome_that_cannot_be_stored_is_written_again_not_delivered_again(
    tmp_path: Path, receiver
) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(400, b"rejected"))
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: strict
            subscriber: {sink.url}/
            start: earliest
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    put_events(db, 1)
    with Store(db) as store:
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 1)
            await asyncio.sleep(0.3)
            assert deadletters.listing(store) == []
            with Store(db) as other:
                other.conn.execute("DROP TRIGGER refuse")
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    run(main())
    assert len(sink.requests) == 1
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert letter.status == 400
        assert cursors.get(store, "strict").position == 1  # type: ignore[union-attr]


def test_a_dead_letter_and_its_bookkeeping_are_one_transaction(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(500))
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
            delivery: {{retry: 1, backoffDelay: 10ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    put_events(db, 1)
    with Store(db) as store:
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON retries BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 2)
            await asyncio.sleep(0.3)
            # The dead letter was not stored without its retry row going too: nothing half-written.
            assert deadletters.listing(store) == []
            assert retries.count(store) == 1
            with Store(db) as other:
                other.conn.execute("DROP TRIGGER refuse")
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    run(main())
    assert len(sink.requests) == 2
    with Store(db) as store:
        assert len(deadletters.listing(store)) == 1 and retries.count(store) == 0


def test_a_store_error_during_reload_keeps_the_worker_and_the_next_reload_applies(
    tmp_path: Path, receiver, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    from evroute.worker.runner import Runner, WorkerOptions

    sink = receiver()
    one = f"""
        routes:
          - name: a
            subscriber: {sink.url}/a
        """
    two = (
        one
        + f"""  - name: b
            subscriber: {sink.url}/b
        """
    )
    rs = routeset(tmp_path, one)
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    runner = Runner(WorkerOptions(store=parse(f"sqlite:{db}"), routes=str(tmp_path / "routes.yaml")))

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            store.conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON cursors BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
            routeset(tmp_path, two)
            with caplog.at_level(logging.ERROR, "evroute.worker"):
                await runner._reload(engine)
            assert "b" not in engine.runtimes
            assert any("disk I/O error" in r.getMessage() for r in caplog.records)
            store.conn.execute("DROP TRIGGER refuse")
            await runner._reload(engine)
            assert "b" in engine.runtimes
        finally:
            await engine.stop()
            store.close()

    run(main(), timeout=60)


# ---------------------------------------------------------------------------------- route changes


def test_pause_holds_an_ordered_route_at_the_next_event(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    gate = Gate()
    sink = receiver(gate)
    text = f"""
        routes:
          - name: ledger
            subscriber: {sink.url}/
            start: earliest
            delivery: {{ordering: ordered}}
        """
    rs = routeset(tmp_path, text)
    paused = routeset(tmp_path, text.replace("start: earliest", "start: earliest\n            paused: true"))
    assert paused.routes[0].paused
    db = str(tmp_path / "ev.db")
    put_events(db, 30)
    with_cursors(db, rs)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, once=True)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 1)
            await engine.apply(paused)
            gate.open.set()
            await engine.run_until_idle(drain=False)
        finally:
            await engine.stop()
            store.close()

    run(main())
    assert sink.ids() == ["e-0"]
    with Store(db) as store:
        assert cursors.get(store, "ledger").position == 1  # type: ignore[union-attr]


def test_a_changed_filter_applies_to_the_next_event_of_an_unordered_route(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    gate = Gate()
    sink = receiver(gate)
    text = f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
            delivery: {{concurrency: 1}}
        """
    rs = routeset(tmp_path, text)
    narrowed = routeset(
        tmp_path, text.replace("start: earliest", "start: earliest\n            filter: {id: e-9}")
    )
    db = str(tmp_path / "ev.db")
    put_events(db, 10)
    with_cursors(db, rs)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, once=True)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 1)
            await engine.apply(narrowed)
            gate.open.set()
            await engine.run_until_idle(drain=False)
        finally:
            await engine.stop()
            store.close()

    run(main())
    assert sink.ids() == ["e-0", "e-9"]


def test_a_reload_never_takes_a_route_over_its_concurrency(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(200, delay=0.8 if r.ce_id in {"e-0", "e-1", "e-2", "e-3"} else 0.0))
    text = f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
            delivery: {{concurrency: 4}}
        """
    rs = routeset(tmp_path, text)
    narrowed = routeset(tmp_path, text.replace("concurrency: 4", "concurrency: 2"))
    db = str(tmp_path / "ev.db")
    put_events(db, 12)
    with_cursors(db, rs)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            await until(lambda: len(sink.requests) == 4)
            await engine.apply(narrowed)
            await asyncio.sleep(0.3)
            # The four started before the change are still running: nothing new starts beside them.
            assert len(sink.requests) == 4
            assert engine.runtimes["r"].slots.used == 4
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    run(main())
    assert sorted(sink.ids()) == sorted(f"e-{i}" for i in range(12))


# ---------------------------------------------------------------------------------- the breaker


def test_permanent_failures_do_not_open_the_breaker(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver(lambda r: Reply(400))
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            start: earliest
            delivery: {{circuitBreaker: {{consecutiveFailures: 2, cooldown: 1h}}}}
        """,
    )
    db = str(tmp_path / "ev.db")
    put_events(db, 5)
    with_cursors(db, rs)

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, clock=FakeClock(), once=True)
        await engine.start()
        try:
            await engine.run_until_idle(drain=False)
        finally:
            await engine.stop()
            store.close()

    run(main(), timeout=8)
    assert len(sink.requests) == 5
    with Store(db) as store:
        assert len(deadletters.listing(store)) == 5
        assert cursors.get(store, "r").breaker == "closed"  # type: ignore[union-attr]


def test_the_breaker_state_reaches_status_at_the_next_commit(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    sink = receiver()
    rs = routeset(
        tmp_path,
        f"""
        routes:
          - name: r
            subscriber: {sink.url}/
            delivery: {{circuitBreaker: {{consecutiveFailures: 1, cooldown: 10s}}}}
        """,
    )
    db = str(tmp_path / "ev.db")
    with_cursors(db, rs)
    clock = FakeClock()

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs, clock=clock)
        await engine.start()
        try:
            engine.runtimes["r"].breaker.failure(clock.now)
            await engine.commit()
            assert cursors.get(store, "r").breaker == "open"  # type: ignore[union-attr]
            clock.advance(11)  # the cooldown is over: the next delivery probes
            await engine.commit()
            assert cursors.get(store, "r").breaker == "half-open"  # type: ignore[union-attr]
        finally:
            await engine.stop()
            store.close()

    run(main())


# ---------------------------------------------------------------------------------- backlog work


def test_lag_is_read_with_an_index_seek_not_a_count_of_the_backlog(tmp_path: Path) -> None:
    rs = routeset(
        tmp_path,
        """
        routes:
          - name: r
            subscriber: http://127.0.0.1:9/
            start: earliest
            paused: true
        """,
    )
    db = str(tmp_path / "ev.db")
    with Store(db) as store, store.write() as conn:
        conn.executemany(
            "INSERT INTO events (broker, id, source, type, published_at) VALUES ('default', ?, '/s', 't', 0)",
            [(f"e-{i}",) for i in range(20_000)],
        )
    with_cursors(db, rs)

    async def main() -> int:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        try:
            store.conn.set_progress_handler(count, 100)
            lag = (await engine.refresh_lag())["r"]
            store.conn.set_progress_handler(None, 100)
            assert lag == 20_000
            return steps[0]
        finally:
            await engine.stop()
            store.close()

    # A count(*) over 20k rows runs hundreds of thousands of VM steps; a max(seq) seek a few dozen.
    assert run(main()) < 50


def test_a_background_loop_that_fails_is_logged_once_backed_off_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from evroute.worker.supervise import Supervisor

    waits: list[float] = []
    calls = [0]

    async def nap(seconds: float) -> None:
        waits.append(seconds)

    async def flaky() -> None:
        calls[0] += 1
        if calls[0] <= 3:
            raise sqlite3.OperationalError("disk I/O error")
        await asyncio.Event().wait()

    async def main() -> None:
        sup = Supervisor(sleep=nap)
        sup.spawn("commits", flaky)
        await until(lambda: calls[0] == 4)
        assert sup.degraded() == ["commits"]
        await sup.stop()

    with caplog.at_level(logging.WARNING, "evroute.worker"):
        run(main())
    logged = [r for r in caplog.records if "commits" in r.getMessage()]
    assert len(logged) == 1 and "disk I/O error" in logged[0].getMessage()
    assert waits == sorted(waits) and waits[0] > 0 and len(waits) == 3


def test_another_process_commit_wakes_an_idle_worker_through_the_wal_file(tmp_path: Path) -> None:
    from evroute.store.wakeups import WalWatch

    db = str(tmp_path / "ev.db")
    Store(db).close()

    async def main() -> None:
        watch = WalWatch(db)
        assert watch.start()  # Linux: inotify
        try:
            await asyncio.sleep(0)
            assert not watch.signal.is_set()
            put_events(db, 1)  # another connection commits
            await asyncio.wait_for(watch.signal.wait(), 5)
        finally:
            watch.stop()

    run(main())
