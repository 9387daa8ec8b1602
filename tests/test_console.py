"""The console's server side over HTTP, against a real ``evroute ui`` process and a real
SQLite file: sign-in, the CSRF rule, the actions and their errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evroute.cloudevent import make_event
from evroute.store import Store, cursors, deadletters
from evroute.store import log as event_log
from evroute.store.deadletters import NewDeadLetter

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(folder: Path) -> None:
    (folder / "routes.yaml").write_text(
        "routes:\n"
        "  - {name: pay, filter: {type: order.placed}, subscriber: 'http://127.0.0.1:9/pay', "
        "headers: {X-Key: '${PAY_KEY}'}}\n"
        "  - {name: audit, subscriber: 'http://127.0.0.1:9/audit'}\n"
    )
    with Store(str(folder / "ev.db")) as store:
        cursors.ensure(store, [("pay", "default", "earliest"), ("audit", "default", "earliest")])
        events = [
            make_event(type="order.placed", source="/shop", id=f"o-{i}", data=b'{"n": %d}' % i)
            for i in range(3)
        ]
        event_log.append(store, "default", events)
        deadletters.add(
            store,
            [
                NewDeadLetter(
                    "pay", "default", 1, events[0], 4, 500, "retries exhausted", "HTTP 500", b"x", 1.0, 2.0
                )
            ],
        )


class Console:
    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "PAY_KEY": "pay-secret-123", **(env or {})}
        environ.pop("EVROUTE_TOKEN", None)
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "evroute",
                "--db",
                str(folder / "ev.db"),
                "--routes",
                str(folder / "routes.yaml"),
                "ui",
                "--listen",
                f"127.0.0.1:{self.port}",
                *args,
            ],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.client = httpx.Client(base_url=self.base)
        self.banner = self.proc.stdout.readline().strip()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.base}/ui/static/app.css", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"console did not start: {self.banner}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)
        self.client.close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    seed(tmp_path)
    c = Console(tmp_path, "--token", "tok")
    yield c
    c.stop()


def signed_in(c: Console) -> tuple[httpx.Client, str]:
    client = c.client
    r = client.post("/ui/login", data={"token": "tok", "next": "/ui/dead-letters"})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/dead-letters"
    page = client.get("/ui/dead-letters").text
    match = re.search(r'<meta name="csrf" content="([0-9a-f]+)">', page)
    assert match
    return client, match.group(1)


def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_a_wrong_token(console: Console) -> None:
    r = httpx.post(f"{console.base}/ui/login", data={"token": "nope", "next": "/ui/"})
    assert r.status_code == 401 and "not right" in r.text and "set-cookie" not in r.headers
    r = httpx.post(f"{console.base}/ui/login", data={"token": "tok", "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/"  # never an open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "tok" not in cookie.split(";")[0].split("=", 1)[1]


def test_a_generated_token_is_printed_as_a_sign_in_link(tmp_path: Path) -> None:
    seed(tmp_path)
    c = Console(tmp_path)
    try:
        match = re.search(r"(http://\S+/ui/login\?token=(\S+))", c.banner)
        assert match, c.banner
        with httpx.Client() as client:
            r = client.get(match.group(1))
            assert r.status_code == 303 and r.headers["Location"] == "/ui/"
            assert client.get(f"{c.base}/ui/").status_code == 200
        assert httpx.get(f"{c.base}/ui/login?token=wrong").status_code == 401
    finally:
        c.stop()


def test_pages_mask_secrets_and_escape_data(console: Console) -> None:
    client, _ = signed_in(console)
    page = client.get("/ui/routes/pay").text
    assert "pay-secret-123" not in page and "***" in page
    assert client.get("/ui/routes/nope").status_code == 404
    assert client.get("/ui/events/999").status_code == 404
    assert client.get("/ui/static/../auth.py").status_code == 404


def test_actions_need_the_csrf_value_and_go_through_the_library(console: Console, tmp_path: Path) -> None:
    client, csrf = signed_in(console)
    headers = {"X-CSRF-Token": csrf}
    assert client.post("/ui/api/routes/pay/pause", json={}).status_code == 403
    r = client.post("/ui/api/routes/pay/pause", json={}, headers=headers)
    assert r.status_code == 200 and r.json() == {"route": "pay", "paused": True, "changed": True}
    assert "paused: true" in (tmp_path / "routes.yaml").read_text()
    r = client.post("/ui/api/routes/pay/resume", json={}, headers=headers)
    assert r.json()["paused"] is False
    # A cross-origin post is refused even with the right CSRF value.
    evil = {**headers, "Origin": "http://evil.example"}
    assert client.post("/ui/api/routes/pay/pause", json={}, headers=evil).status_code == 403
    # Reset preview, then reset.
    r = client.post("/ui/api/routes/pay/reset-preview", json={"to": "2"}, headers=headers)
    assert r.json() == {"position": 1, "events": 2}
    assert client.post("/ui/api/routes/pay/reset", json={"to": "2"}, headers=headers).json()["position"] == 1
    bad = client.post("/ui/api/routes/pay/reset", json={"to": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and "bad --to" in bad.json()["error"]
    # The filter test names the failing part.
    r = client.post("/ui/api/routes/pay/test", json={"event": '{"type": "order.cancelled"}'}, headers=headers)
    assert r.json() == {
        "route": "pay",
        "matched": False,
        "failed_filter": "filter type: expected 'order.placed', got 'order.cancelled'",
    }
    # Replay one dead letter with edited data: a new event, linked to the old one.
    r = client.post("/ui/api/dead-letters/1/replay-edited", json={"data": '{"n": 42}'}, headers=headers)
    assert r.status_code == 200
    new = r.json()
    assert new["id"] != "o-0" and new["seq"] == 4
    with Store(str(tmp_path / "ev.db")) as store:
        stored = event_log.get(store, 4)
    assert stored is not None and stored.event.data == b'{"n": 42}'
    assert stored.event.attributes["evroutereplayof"] == "o-0"
    # Linked both ways on the event pages.
    assert 'edited replay of <a href="/ui/events/1">seq 1</a>' in client.get("/ui/events/4").text
    assert 'edited replay <a href="/ui/events/4">seq 4</a>' in client.get("/ui/events/1").text
    # Bulk replay then purge.
    assert client.post("/ui/api/dead-letters", json={"ids": [1], "op": "replay"}, headers=headers).json() == {
        "replayed": 1
    }
    assert (
        client.post("/ui/api/dead-letters", json={"ids": [], "op": "purge"}, headers=headers).status_code
        == 400
    )
    assert client.post("/ui/api/dead-letters", json={"ids": [1], "op": "purge"}, headers=headers).json() == {
        "purged": 1
    }
    assert (
        client.post("/ui/api/dead-letters", json={"ids": [1], "op": "purge"}, headers=headers).status_code
        == 404
    )
    # Publishing bad data is a 400 naming the problem; nothing is stored.
    r = client.post("/ui/api/publish", json={"type": "t", "data": "{nope"}, headers=headers)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_a_missing_database_is_one_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            PY,
            "-m",
            "evroute",
            "--db",
            str(tmp_path / "none.db"),
            "ui",
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: database") and "Traceback" not in proc.stderr


def test_an_open_live_stream_does_not_hold_up_a_worker_stop(tmp_path: Path) -> None:
    seed(tmp_path)
    port = free_port()
    worker = subprocess.Popen(
        [
            PY,
            "-m",
            "evroute",
            "--db",
            str(tmp_path / "ev.db"),
            "--routes",
            str(tmp_path / "routes.yaml"),
            "worker",
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            "tok",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PAY_KEY": "k"},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and worker.poll() is None, "worker did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            headers = {"Authorization": "Bearer tok"}
            with client.stream("GET", "/ui/api/stream?view=overview", headers=headers) as stream:
                assert next(stream.iter_lines()) == "retry: 1000"
                started = time.monotonic()
                worker.terminate()
                worker.wait(20)
                # An idle worker stops in about 0.1 s; a stream left waiting for changes used to
                # hold the stop for seconds.
                assert time.monotonic() - started < 1.5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert worker.returncode == 0


def test_event_filters_search_and_the_send_form_prefill(console: Console, tmp_path: Path) -> None:
    from evroute.store import outcomes

    with Store(str(tmp_path / "ev.db")) as store, store.write() as conn:
        outcomes.insert(
            conn, [(1.0, "pay", 1, 1, "retrying", 503, 3.0), (2.0, "audit", 2, 1, "delivered", 200, 1.0)]
        )
    client, _ = signed_in(console)

    def ids(path: str) -> list[str]:
        return re.findall(r'<td class="id"><a href="[^"]+">([^<]+)</a>', client.get(path).text)

    assert ids("/ui/events") == ["o-2", "o-1", "o-0"]
    assert ids("/ui/events?q=o-1") == ["o-1"]
    assert ids("/ui/events?q=nothing") == []
    assert ids("/ui/events?type=order.cancelled") == []
    assert ids("/ui/events?route=pay") == ["o-0"]
    assert ids("/ui/events?outcome=delivered") == ["o-1"]
    assert ids("/ui/events?route=pay&outcome=delivered") == []
    page = client.get("/ui/send?from=order.placed").text
    assert 'name="type" value="order.placed"' in page and "&quot;n&quot;: 2" in page


def test_pages_cannot_be_framed_and_load_only_their_own_files(console: Console) -> None:
    client, _ = signed_in(console)
    for path in ("/ui/", "/ui/login"):
        r = client.get(path)
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
