"""Crash recovery and moving a route by hand, on every store: ``evroute worker`` as a real
process killed with SIGKILL mid-stream, and ``subscribe reset`` replaying what was delivered."""

from __future__ import annotations

import signal
from collections import Counter

from contract.stores import StoreCase

from receiver import Receiver, Reply


def test_kill_9_mid_delivery_then_restart_loses_nothing(store: StoreCase) -> None:
    a = Receiver(lambda r: Reply(200, delay=0.002)).start()
    b = Receiver().start()
    try:
        # A short timeout: on JetStream the killed worker's messages come back after AckWait
        # (timeout + margin), which would otherwise be the default 30 s.
        store.routes(
            f"""
            routes:
              - {{name: inventory, subscriber: "{a.url}/", start: earliest, delivery: {{timeout: 2s}}}}
              - {{name: payment, subscriber: "{b.url}/", start: earliest, delivery: {{timeout: 2s}}}}
            """
        )
        ids = store.publish(2000)
        worker = store.process("worker")
        a.wait_for(lambda reqs: len(reqs) >= 400)
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=10)
        before = len(a.requests)
        assert before < 2000, "the kill should land mid-stream"
        with store.store() as s:
            cursor = s.cursor("inventory")
            first = s.find(ids[0])[0].seq
        assert cursor is not None
        finished = cursor.position - first + 1  # events the killed worker had committed as done
        again = store.process("worker", "--drain")
        _out, err = again.communicate(timeout=90)
        assert again.returncode == 0, err.decode()
        assert set(a.ids()) == set(ids)
        assert set(b.ids()) == set(ids)
        twice = [i for i, n in Counter(a.ids()).items() if n > 1]
        # Only what was delivered after the last commit comes again: nothing the cursor had passed.
        assert all(ids.index(i) >= finished for i in twice)
        assert len(twice) <= before - finished
    finally:
        a.stop()
        b.stop()


def test_subscribe_reset_replays_and_skips(store: StoreCase, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers()
    rs = store.routes(
        f"""
        routes:
          - {{name: audit, subscriber: "{sink.url}/", start: earliest}}
        """
    )
    ids = store.publish(6)
    store.drain(rs)
    assert Counter(sink.ids()) == Counter(ids)
    with store.store() as s:
        third = s.find(ids[3])[0].seq
    code, _, err = store.cli("subscribe", "reset", "audit", "--to", str(third))
    assert code == 0, err
    store.drain(rs)
    assert Counter(sink.ids()) == Counter(ids + ids[3:])
    code, _, err = store.cli("subscribe", "reset", "audit", "--to", "earliest")
    assert code == 0, err
    store.drain(rs)
    assert Counter(sink.ids()) == Counter(ids + ids[3:] + ids)
    store.publish(2, start=100)
    code, _, err = store.cli("subscribe", "reset", "audit", "--to", "latest")
    assert code == 0, err
    store.drain(rs)
    assert len(sink.ids()) == 6 + 3 + 6  # the two skipped events were never delivered
    code, _, err = store.cli("subscribe", "reset", "nope", "--to", "latest")
    assert code == 2 and err.startswith("Error: route 'nope'"), err
