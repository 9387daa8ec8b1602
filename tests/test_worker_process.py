"""``evroute worker`` as a real process on SQLite: the lease, graceful stop, the ingress.
(kill -9 and restart: tests/contract/test_contract_recovery.py, for every store.)"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path

import helpers
import pytest
from helpers import wait_until as wait

from evroute.cloudevent import make_event
from evroute.store import Store, cursors, lease
from evroute.store import log as event_log

from receiver import Receiver, Reply

ROOT = Path(__file__).resolve().parents[1]


def evroute(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return helpers.evroute(tmp_path, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write_routes(tmp_path: Path, text: str) -> None:
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(text))


def publish(tmp_path: Path, n: int, start: int = 0) -> list[str]:
    events = [
        make_event(type="order.placed", source="/shop", id=f"o-{i}", data=b"{}")
        for i in range(start, start + n)
    ]
    with Store(str(tmp_path / "ev.db")) as store:
        for i in range(0, n, 100):
            event_log.append(store, "default", events[i : i + 100])
    return [e.id for e in events]


@pytest.fixture
def two_receivers():  # type: ignore[no-untyped-def]
    a = Receiver(lambda r: Reply(200, delay=0.002)).start()
    b = Receiver().start()
    yield a, b
    a.stop()
    b.stop()


def test_second_worker_stands_by_and_takes_over_after_kill(tmp_path: Path, two_receivers) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_receivers
    write_routes(
        tmp_path,
        f"""
        routes:
          - {{name: inventory, subscriber: "{a.url}/"}}
        """,
    )
    with Store(str(tmp_path / "ev.db")) as store:
        cursors.ensure(store, [("inventory", "default", "latest")])
    first = evroute(tmp_path, "worker")
    with Store(str(tmp_path / "ev.db")) as store:
        wait(lambda: lease.current(store) is not None)
    second = evroute(tmp_path, "worker")
    busy = evroute(tmp_path, "worker", "--once")
    _, err = busy.communicate(timeout=30)
    assert busy.returncode == 1
    assert b"Error: another worker" in err
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    killed_at = time.time()
    ids = publish(tmp_path, 5)
    a.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids), timeout=15)
    assert time.time() - killed_at < 10
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0
    assert b"standing by" in err


def test_sigterm_lets_in_flight_deliveries_finish_and_commits(tmp_path: Path) -> None:
    slow = Receiver(lambda r: Reply(200, delay=0.8)).start()
    try:
        write_routes(
            tmp_path,
            f"""
            routes:
              - {{name: slow, subscriber: "{slow.url}/", start: earliest, delivery: {{concurrency: 4}}}}
            """,
        )
        ids = publish(tmp_path, 4)
        worker = evroute(tmp_path, "worker")
        slow.wait_for(lambda reqs: len(reqs) == 4)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err.decode()
        with Store(str(tmp_path / "ev.db")) as store:
            cursor = cursors.get(store, "slow")
            assert cursor is not None and cursor.delivered == 4
            assert cursor.position == event_log.last_seq(store)
        assert sorted(slow.ids()) == sorted(ids)
    finally:
        slow.stop()


def test_worker_ingress_accepts_events_and_delivers_them_at_once(tmp_path: Path) -> None:
    import socket

    import httpx

    sink = Receiver().start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_routes(tmp_path, f"routes:\n  - {{name: inventory, subscriber: '{sink.url}/'}}\n")
    worker = evroute(tmp_path, "worker", "--listen", f"127.0.0.1:{port}", "--token", "t0k")
    try:
        wait(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200 if _open(port) else False
        )
        headers = {"ce-specversion": "1.0", "ce-id": "i-1", "ce-source": "/web", "ce-type": "order.placed",
                   "content-type": "application/json", "authorization": "Bearer t0k"}  # fmt: skip
        answer = httpx.post(f"http://127.0.0.1:{port}/", headers=headers, content=b'{"n": 1}')
        assert answer.status_code == 202, answer.text
        assert (
            httpx.post(f"http://127.0.0.1:{port}/", headers={**headers, "authorization": ""}).status_code
            == 401
        )
        sink.wait_for(lambda reqs: [r.ce_id for r in reqs] == ["i-1"], timeout=10)
        assert sink.requests[0].body == b'{"n": 1}'
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"authorization": "Bearer t0k"}).text
        assert 'evroute_events_published_total{broker="default"} 1.0' in metrics
        wait(lambda: 'evroute_deliveries_total{broker="default",route="inventory"} 1.0' in
             httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"authorization": "Bearer t0k"}).text)  # fmt: skip
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
        sink.stop()


def _open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
