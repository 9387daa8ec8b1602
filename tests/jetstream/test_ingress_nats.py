"""The ingress of a worker on the JetStream store: 202 only once the server acknowledged
(PubAck), so an event the ingress accepted is in the stream; no server, no 202."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from evroute.store.opener import open_store, parse

ROOT = Path(__file__).resolve().parents[2]
ROUTES = "routes:\n  - {name: audit, subscriber: 'http://127.0.0.1:9/', start: earliest}\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, i: int) -> httpx.Response:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "order.placed",
        "ce-source": "/shop",
        "ce-id": f"o{i}",
        "content-type": "application/json",
    }
    return httpx.post(url, headers=headers, content=b'{"n": %d}' % i, timeout=30)


def test_202_only_after_the_pub_ack(nats_server, tmp_path: Path) -> None:
    url = nats_server.url
    with open_store(parse(url)) as store:
        store.put_routes(str(tmp_path / "routes.yaml"), ROUTES, None)
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "evroute", "--store", url, "worker", "--listen", f"127.0.0.1:{port}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and worker.poll() is None, "the ingress did not come up"
            time.sleep(0.05)
        for i in range(5):
            assert _post(base, i).status_code == 202
            with open_store(parse(url)) as store:  # accepted means in the stream already
                found = store.find(f"o{i}")
                assert [(f.event.source, f.broker) for f in found] == [("/shop", "default")]
        nats_server.kill()
        answer = _post(base, 99)  # no PubAck within the publish timeout
        assert answer.status_code == 503, answer.text
        assert worker.poll() is None  # the worker stays up, reconnecting
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
        worker.wait(10)
