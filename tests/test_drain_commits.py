"""`worker --drain` / `--once` commit cursors in batches while deliveries are under way (at the
commit interval, as the running worker does), and once more before declaring the backlog done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from helpers import json_event

from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors
from evroute.store import log as event_log
from evroute.worker.engine import COMMIT_INTERVAL, Engine

from receiver import Receiver, Reply


def test_a_busy_drain_commits_cursors_in_batches_and_ends_committed(tmp_path: Path) -> None:
    receiver = Receiver(lambda _r: Reply(delay=0.05)).start()
    try:
        text = f"routes:\n  - {{name: r, subscriber: '{receiver.url}', start: earliest, delivery: {{concurrency: 1}}}}\n"
        routeset = load_routes_text(text, str(tmp_path / "routes.yaml"))
        db = str(tmp_path / "ev.db")
        with Store(db) as store:
            cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])
            event_log.append(store, "default", [json_event("t", f"e{i}", {"i": i}) for i in range(16)])
        commits = 0

        async def main() -> float:
            nonlocal commits
            store = Store(db)
            engine = Engine(store, routeset, once=False)
            real = engine.commit

            def counted() -> Any:
                nonlocal commits
                commits += 1
                return real()

            engine.commit = counted  # type: ignore[method-assign]
            await engine.start()
            started = time.monotonic()
            try:
                await engine.run_until_idle(drain=True)
                return time.monotonic() - started
            finally:
                await engine.stop()
                store.close()

        busy = asyncio.run(main())
        assert busy >= 16 * 0.05
        # The batching loop and the idle looks, each at COMMIT_INTERVAL while busy (every 10 ms
        # before: about a hundred commits a second of delivery).
        assert commits <= 2 * busy / COMMIT_INTERVAL + 6, (commits, busy)
        with Store(db) as store:
            cursor = cursors.all_cursors(store)["r"]
        assert (cursor.position, cursor.delivered) == (16, 16)
        assert len(receiver.requests) == 16
    finally:
        receiver.stop()
