"""The ingress caps the request bytes it reads at once (SPEC 6.1), against a real worker process:
while slow uploads hold the budget, the next request is told 503 with Retry-After instead of
being buffered; a request alone always passes; the budget comes back when a request ends."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import evroute, evroute_env, free_port, stop, wait_until
from ingress_server import IngressThread

from evroute.store import log as event_log
from evroute.worker.inflight import Budget

LIMIT = 10_000  # maxEventBytes: the budget is 64 x this, a batch body may be 100 x this
BUDGET = 64 * LIMIT
BIN = {"ce-specversion": "1.0", "ce-source": "/shop", "ce-type": "order.placed"}


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "routes.yaml").write_text(f"settings: {{maxEventBytes: {LIMIT}}}\nroutes: []\n")
    port = free_port()
    env = evroute_env()
    env.pop("EVROUTE_TOKEN", None)
    log = (tmp_path / "worker.log").open("wb")
    proc = evroute(tmp_path, "worker", "--listen", f"127.0.0.1:{port}", env=env, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 20, "ingress up")
        yield url
    finally:
        stop(proc)
        log.close()


def batch_body(size: int, prefix: str) -> bytes:
    """A valid batch of events of about 5 kB each, padded with whitespace to exactly ``size``."""
    events, total = [], 2
    while total + 5200 < size:
        event = {**{k[3:]: v for k, v in BIN.items()}, "id": f"{prefix}-{len(events)}", "data": "x" * 5000}
        events.append(event)
        total += len(json.dumps(event)) + 2
    body = json.dumps(events).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def start_upload(url: str, body: bytes, sent: int) -> socket.socket:
    """A slow uploader: the headers and the first ``sent`` bytes of ``body``, then nothing."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/cloudevents-batch+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:sent])
    return sock


def finish_upload(sock: socket.socket, body: bytes, sent: int) -> tuple[int, bytes]:
    sock.sendall(body[sent:])
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def post_event(url: str, event_id: str, size: int, chunked: bool = False) -> httpx.Response:
    data = b"d" * size
    content: bytes | Iterator[bytes] = iter([data[: size // 2], data[size // 2 :]]) if chunked else data
    return httpx.post(url + "/", headers={**BIN, "ce-id": event_id}, content=content, timeout=20)


def test_bodies_past_the_in_flight_cap_get_503_with_retry_after(worker: str) -> None:
    big = batch_body(BUDGET - 4_000, "slow")
    slow = start_upload(worker, big, 1000)
    try:
        # The slow upload holds all but 4 kB of the budget once its handler runs: from then on a
        # 9 kB request does not fit and is told to come back.
        deadline = time.monotonic() + 20
        while (busy := post_event(worker, "b-1", 9_000)).status_code == 202:
            assert time.monotonic() < deadline, "the slow upload never held the budget"
            time.sleep(0.05)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"].startswith("the ingress is reading ")
        # what still fits is taken, with a length or chunked
        assert post_event(worker, "c-1", 2_000).status_code == 202
        assert post_event(worker, "c-2", 1_500, chunked=True).status_code == 202
        assert httpx.get(worker + "/healthz").status_code == 200
        status, answer = finish_upload(slow, big, 1000)
    finally:
        slow.close()
    assert status == 202, answer
    assert json.loads(answer)["stored"] > 100
    # the budget came back
    assert post_event(worker, "b-1", 9_000).status_code == 202


def test_a_request_alone_passes_even_over_the_cap(worker: str) -> None:
    body = batch_body(BUDGET + 60_000, "alone")  # over the in-flight cap, within the batch limit
    response = httpx.post(
        worker + "/", headers={"Content-Type": "application/cloudevents-batch+json"}, content=body, timeout=20
    )
    assert response.status_code == 202, response.text


def test_the_budget_admits_what_fits_and_a_request_alone() -> None:
    budget = Budget(100)
    a, b, c = budget.ticket(), budget.ticket(), budget.ticket()
    assert a.take(150)  # alone: over the cap, still admitted
    assert not b.take(1) and b.held == 0  # nothing fits beside it
    a.release()
    assert budget.used == 0
    assert a.take(60) and b.take(40)  # exactly the cap
    assert not c.take(1)
    assert b.take(10) is False and budget.used == 100  # a refused take holds nothing more
    b.release()
    assert c.take(40) and budget.used == 100
    a.release()
    c.release()
    assert budget.used == 0


def test_a_stalled_body_is_given_up_and_its_share_returned(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", max_inflight_bytes=10_000, body_idle_timeout=0.5) as ingress:
        head = (
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nce-specversion: 1.0\r\nce-id: stall-1\r\n"
            "ce-source: /shop\r\nce-type: order.placed\r\nContent-Length: 8000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", ingress.port), timeout=20) as sock:
            sock.sendall(head.encode() + b"d" * 100)  # then nothing more
            wait_until(lambda: post_event(ingress.url, "b-1", 5_000).status_code == 503, 10, "budget held")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"the request body sent nothing for 0.5s; nothing was stored" in answer
        assert post_event(ingress.url, "b-1", 5_000).status_code == 202
        assert [e.event.id for e in event_log.read_after(ingress.store, "default", 0, limit=10)] == ["b-1"]
