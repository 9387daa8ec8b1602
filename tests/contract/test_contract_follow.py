"""``evroute tail`` and the web console on every store: the recent outcomes a real worker
writes (SQLite's ring table, NATS's stream EVROUTE_OUTCOMES) read back through the store seam,
followed by ``tail --json`` and served by ``evroute ui``."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import Any

import httpx
from helpers import free_port, stop, wait_until

from contract.stores import StoreCase

ROUTES = """\
routes:
  - name: orders
    subscriber: {url}/orders
    start: earliest
    delivery:
      timeout: PT2S
      retry: 0
"""


def _lines(proc: subprocess.Popen[bytes]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's stdout, one line at a time, read on a thread (a test waits with a timeout)."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.put(raw.decode())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return out, reader


def _closed(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _next_json(lines: queue.Queue[str], proc: subprocess.Popen[bytes], timeout: float = 30.0) -> Any:
    try:
        return json.loads(lines.get(timeout=timeout))
    except queue.Empty:
        proc.kill()
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"no line within {timeout:g}s; stderr: {err}") from None


def test_recent_outcomes_are_read_through_the_seam(store: StoreCase, receivers: Any) -> None:
    sink = receivers()
    routeset = store.routes(ROUTES.format(url=sink.url))
    ids = store.publish(3)
    with store.store() as s:
        before = s.last_outcome()
    store.drain(routeset)
    assert sorted(r.ce_id for r in sink.requests) == sorted(ids)

    def all_read() -> bool:
        with store.store() as s:
            return len(s.recent_outcomes(before)) == 3

    wait_until(all_read, 20, "three outcomes readable")
    with store.store() as s:
        found = s.recent_outcomes(before)
        assert s.last_outcome() == found[-1].n
        assert s.recent_outcomes(found[-1].n) == []
        assert [o.n for o in s.recent_outcomes(before, limit=2)] == [o.n for o in found[:2]]
    assert [o.n for o in found] == sorted(o.n for o in found)
    with store.store() as s:  # the outcomes are not events of a broker
        assert sorted(e.event.id for e in s.events(limit=10)) == sorted(ids)
    assert sorted(o.id for o in found) == sorted(ids)
    for o in found:
        assert (o.route, o.broker, o.type, o.outcome, o.status, o.attempt) == (
            "orders",
            "default",
            "order.placed",
            "delivered",
            200,
            1,
        )
        assert o.latency_ms is not None and o.latency_ms >= 0


def test_tail_json_prints_what_a_real_worker_delivers(store: StoreCase, receivers: Any) -> None:
    sink = receivers()
    store.routes(ROUTES.format(url=sink.url))
    store.publish(1, start=0)
    worker = store.process("worker")
    tail = store.process("tail", "--json", "--last", "10")
    try:
        lines, reader = _lines(tail)
        first = _next_json(lines, tail)
        assert (first["route"], first["id"], first["type"], first["outcome"], first["status"]) == (
            "orders",
            "order.placed-0",
            "order.placed",
            "delivered",
            200,
        )
        assert first["broker"] == "default" and first["endpoint"].endswith("/orders")
        # followed live: an event published now shows up as the worker delivers it
        store.publish(1, start=1)
        second = _next_json(lines, tail)
        assert (second["id"], second["outcome"]) == ("order.placed-1", "delivered")
        assert second["seq"] > first["seq"]
    finally:
        tail.kill()
        tail.wait(10)
        reader.join(10)
        code = stop(worker)
        _closed(tail)
        _closed(worker)
    assert code == 0


def _serving(proc: subprocess.Popen[bytes], url: str, auth: dict[str, str]) -> bool:
    if proc.poll() is not None:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"the process exited {proc.returncode}: {err}")
    try:
        return httpx.get(url, headers=auth, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_worker_listen_serves_the_console_of_its_store(store: StoreCase, receivers: Any) -> None:
    sink = receivers()
    store.routes(ROUTES.format(url=sink.url))
    port = free_port()
    worker = store.process("worker", "--listen", f"127.0.0.1:{port}", "--token", "worker-token")
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer worker-token"}
    try:
        wait_until(lambda: _serving(worker, f"{base}/ui/", auth), 30, "the worker's console serves")
        [event_id] = store.publish(1)

        def delivered_shown() -> bool:
            page = httpx.get(f"{base}/ui/events/{event_id}", headers=auth, timeout=10)
            return page.status_code == 200 and "delivered" in page.text

        wait_until(delivered_shown, 30, "the event page shows the delivery")
        assert [r.ce_id for r in sink.requests] == [event_id]
    finally:
        code = stop(worker)
        _closed(worker)
    assert code == 0


def test_console_serves_the_overview_and_an_event_page(store: StoreCase, receivers: Any) -> None:
    sink = receivers()
    routeset = store.routes(ROUTES.format(url=sink.url))
    [event_id] = store.publish(1)
    store.drain(routeset)
    port = free_port()
    ui = store.process("ui", "--listen", f"127.0.0.1:{port}", "--token", "console-token")
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer console-token"}

    try:
        wait_until(lambda: _serving(ui, f"{base}/ui/", auth), 30, "the console serves")
        overview = httpx.get(f"{base}/ui/", headers=auth, timeout=10)
        assert overview.status_code == 200 and "orders" in overview.text
        assert httpx.get(f"{base}/ui/", timeout=10, follow_redirects=False).status_code in (302, 303)

        page = httpx.get(f"{base}/ui/events/{event_id}", headers=auth, timeout=10)
        assert page.status_code == 200
        assert event_id in page.text and "order.placed" in page.text
        no_timeline = "keeps no attempt history" in page.text
        assert no_timeline == (store.name == "nats")

        # the outcome filter reads the recent outcomes (the ring / stream EVROUTE_OUTCOMES)
        def listed() -> bool:
            found = httpx.get(f"{base}/ui/events?route=orders", headers=auth, timeout=10)
            return found.status_code == 200 and event_id in found.text and "delivered" in found.text

        wait_until(listed, 20, "the delivered event listed by its outcome")

        missing = httpx.get(f"{base}/ui/events/no-such-event", headers=auth, timeout=10)
        assert missing.status_code == 404
    finally:
        code = stop(ui)
        _closed(ui)
    assert code == 0
