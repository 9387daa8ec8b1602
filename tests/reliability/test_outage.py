"""A subscriber that goes down for longer than its retry schedule, with and without a
circuit breaker, against the real engine, a real SQLite file and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

from evroute.cloudevent import make_event
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Receiver, Reply


def setup(tmp_path: Path, url: str, extra: str) -> tuple[str, object]:
    text = textwrap.dedent(f"""
        routes:
          - name: payment
            subscriber: {url}/
            delivery: {{retry: 2, backoffDelay: 50ms, backoffPolicy: exponential{extra}}}
        """)
    rs = load_routes_text(text, str(tmp_path / "routes.yaml"))
    db = str(tmp_path / "ev.db")
    with Store(db) as store:
        cursors.ensure(store, [("payment", "default", "latest")])
    return db, rs


async def run_engine(db: str, rs, outage: Receiver, down_for: float, ids: list[str], observe) -> None:  # type: ignore[no-untyped-def]
    store = Store(db)
    engine = Engine(store, rs)
    await engine.start()
    started = time.time()
    try:
        with Store(db) as producer:
            for i in range(0, len(ids), 10):
                event_log.append(
                    producer, "default", [make_event(type="t", source="/o", id=x) for x in ids[i : i + 10]]
                )
                await asyncio.sleep(0.05)
        while time.time() - started < down_for:
            observe(engine)
            await asyncio.sleep(0.05)
        outage.behaviour = lambda r: Reply(200)
        await engine.run_until_idle(drain=True)
    finally:
        await engine.stop()
        store.close()


def test_outage_longer_than_retries_dead_letters_then_replay_completes(tmp_path: Path) -> None:
    sink = Receiver(lambda r: Reply(503)).start()
    try:
        db, rs = setup(tmp_path, sink.url, "")
        ids = [f"o-{i}" for i in range(40)]
        asyncio.run(run_engine(db, rs, sink, 1.5, ids, lambda e: None))
        with Store(db) as store:
            letters = deadletters.listing(store)
            dead = {d.event.id for d in letters}
            assert dead, "the outage outlasted the retry schedule"
            assert all(d.attempts == 3 and d.reason == "retries exhausted" for d in letters)
            deadletters.replay(store, [d.id for d in letters])
        # Nothing lost: every event was delivered once the sink was back, or is dead-lettered.
        asyncio.run(run_engine(db, rs, sink, 0.0, [], lambda e: None))
        assert {r.ce_id for r in sink.requests} >= set(ids)
        with Store(db) as store:
            assert deadletters.listing(store) == []
    finally:
        sink.stop()


def test_circuit_breaker_holds_events_through_an_outage_and_dead_letters_nothing(tmp_path: Path) -> None:
    sink = Receiver(lambda r: Reply(503)).start()
    states: set[str] = set()
    try:
        db, rs = setup(tmp_path, sink.url, ", circuitBreaker: {consecutiveFailures: 3, cooldown: 300ms}")
        ids = [f"o-{i}" for i in range(40)]
        asyncio.run(
            run_engine(db, rs, sink, 2.0, ids, lambda e: states.add(e.runtimes["payment"].breaker.state))
        )
        assert "open" in states  # half-open lasts only as long as one probe
        with Store(db) as store:
            assert deadletters.listing(store) == []
            assert cursors.get(store, "payment").breaker == "closed"  # type: ignore[union-attr]
        got = {r.ce_id for r in sink.requests}
        assert got >= set(ids)
        # While open, the route did not hammer the sink: a handful of probes, not 40 × 3 attempts.
        failures_during_outage = sum(1 for r in sink.requests[: len(sink.requests) - len(ids)])
        assert failures_during_outage < 60
    finally:
        sink.stop()
