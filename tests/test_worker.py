"""The delivery engine in-process on SQLite: what only this store has (a write fault injected
in the file). Fan-out, retries, ordering, replies and dead letters run for every store in
tests/contract/test_contract_delivery.py."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from helpers import json_event

from evroute.cloudevent import make_event, to_binary
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Reply, Request


def routes_of(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes_text(path.read_text(), str(path))


def prepare(db: str, routeset) -> None:  # type: ignore[no-untyped-def]
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])


def publish(
    db: str, n: int, type: str = "order.placed", broker: str = "default", start: int = 0
) -> list[str]:
    events = [json_event(type, f"{type}-{i}", {"order": i}) for i in range(start, start + n)]
    with Store(db) as store:
        event_log.append(store, broker, events)
    return [e.id for e in events]


def drain(db: str, routeset, timeout: float = 60.0, drain: bool = True, metrics=None) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = Store(db)
        engine = Engine(store, routeset, once=not drain, metrics=metrics)
        await engine.start()
        try:
            await engine.run_until_idle(drain)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), timeout))


def test_command_subscriber_receives_every_event(tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    script = tmp_path / "handler.py"
    script.write_text(
        "import json, os, sys\n"
        "event = json.load(sys.stdin)\n"
        f"open({str(out)!r}, 'a').write(event['id'] + ' ' + os.environ['EVROUTE_ATTEMPT'] + '\\n')\n"
    )
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: audit
            subscriber: {{command: [{sys.executable}, handler.py]}}
            delivery: {{concurrency: 4}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    ids = publish(db, 12)
    drain(db, rs)
    lines = out.read_text().split()
    assert sorted(lines[0::2]) == sorted(ids)
    assert set(lines[1::2]) == {"1"}


def test_an_outcome_that_cannot_be_stored_keeps_the_event_behind_the_cursor(
    tmp_path: Path, receivers
) -> None:  # type: ignore[no-untyped-def]
    sink = receivers(lambda r: Reply(400, b"rejected"))
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: strict
            subscriber: {sink.url}/
            delivery: {{retry: 0}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    [event_id] = publish(db, 1)
    with Store(db) as store:
        # A real write failure: SQLite refuses every dead letter until the trigger is dropped.
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )

    async def main() -> None:
        store = Store(db)
        engine = Engine(store, rs)
        await engine.start()
        try:
            while not sink.requests:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            await engine.commit()
            assert cursors.get(store, "strict").position == 0  # type: ignore[union-attr]
            assert deadletters.listing(store) == []
            store.conn.execute("DROP TRIGGER refuse")
            await engine.run_until_idle(drain=True)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    with Store(db) as store:
        [letter] = deadletters.listing(store)
        assert letter.event.id == event_id and letter.status == 400
        assert cursors.get(store, "strict").position == event_log.last_seq(store)  # type: ignore[union-attr]


def test_reply_over_max_event_bytes_is_dead_lettered_not_dropped(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    def huge(r: Request) -> Reply:
        headers, body = to_binary(
            make_event(type="order.reserved", source="/inv", id="r-" + r.ce_id, data=b"z" * 5000)
        )
        return Reply(200, body, headers)

    inventory = receivers(huge)
    rs = routes_of(
        tmp_path,
        f"""
        settings: {{maxEventBytes: 4096}}
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
            delivery: {{retry: 3, backoffDelay: 10ms}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 2)
    drain(db, rs)
    assert len(inventory.requests) == 2  # permanent: not retried
    with Store(db) as store:
        letters = deadletters.listing(store, route="inventory")
        assert len(letters) == 2
        for letter in letters:
            assert letter.reason == "permanent failure"
            assert letter.error is not None and letter.error.startswith("invalid reply: event is ")
            assert letter.error.endswith(" bytes, over maxEventBytes 4096")
        assert [e.event.id for e in event_log.read_after(store, "default", 0, limit=100)] == [
            "order.placed-0",
            "order.placed-1",
        ]
        assert cursors.get(store, "inventory").delivered == 0  # type: ignore[union-attr]


def test_a_duplicate_reply_is_not_counted_as_published(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    from evroute.worker.metrics import Metrics

    def same(_r: Request) -> Reply:
        headers, body = to_binary(make_event(type="order.reserved", source="/inv", id="always-the-same"))
        return Reply(200, body, headers)

    inventory = receivers(same)
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {inventory.url}/
            delivery: {{concurrency: 1}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish(db, 3)
    metrics = Metrics()
    drain(db, rs, metrics=metrics)
    assert len(inventory.requests) == 3
    text = metrics.render()[0].decode()
    assert 'evroute_events_published_total{broker="default"} 1.0' in text
    with Store(db) as store:
        replies = [
            e
            for e in event_log.read_after(store, "default", 0, limit=100)
            if e.event.type == "order.reserved"
        ]
        assert len(replies) == 1
