"""The ingress's fast path for the common request, against a real ingress on a loopback port
and a real SQLite file: it answers what the general handler answers, and hands anything else
(with every byte received) to aiohttp. Answers from aiohttp carry its ``Server`` header; the
fast path's do not, which is how these tests tell who answered."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from ingress_server import IngressThread

from evroute.store import log as event_log
from evroute.worker.ingress import INGRESS

TOKEN = "t0ken-for-tests"


def post(event_id: str, path: str = "/", extra: str = "", body: bytes = b'{"n": 1}') -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: {event_id}\r\n"
        f"ce-source: /shop\r\nce-type: order.placed\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Conn:
    """One keep-alive connection; ``answers(n)`` reads exactly n answers (Content-Length framed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answers(self, n: int) -> list[tuple[int, dict[str, str], bytes]]:
        out = []
        while len(out) < n:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                chunk = self.sock.recv(65536)
                assert chunk, f"connection closed after {len(out)} answers"
                self.buf += chunk
                continue
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < end + 4 + length:
                chunk = self.sock.recv(65536)
                assert chunk, "connection closed mid-answer"
                self.buf += chunk
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            out.append((int(lines[0].split(" ")[1]), headers, body))
        return out

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def ids(srv: IngressThread, broker: str = "default") -> list[str]:
    return [r.event.id for r in event_log.read_after(srv.store, broker, 0, 1000)]


def test_the_fast_answer_is_the_general_handlers(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db") as srv:
        c = Conn(srv.port)
        c.send(post("fast-1"))
        c.send(post("slow-1", path="/?via=aiohttp"))  # a query string: the general handler's
        (fast,) = c.answers(1)
        (slow,) = c.answers(1)
        c.close()
        assert "server" not in fast[1] and "aiohttp" in slow[1]["server"]
        assert fast[0] == slow[0] == 202
        assert json.loads(fast[2]) == json.loads(slow[2]) == {"stored": 1, "duplicates": 0}
        assert fast[1]["content-type"] == slow[1]["content-type"] == "application/json; charset=utf-8"
        assert "date" in fast[1]
        assert ids(srv) == ["fast-1", "slow-1"]
        stored = {r.event.id: r.event for r in event_log.read_after(srv.store, "default", 0, 10)}
        assert stored["fast-1"].attributes.keys() == stored["slow-1"].attributes.keys()
        assert stored["fast-1"].data == stored["slow-1"].data == b'{"n": 1}'
        assert srv.woken == ["default", "default"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_keep_alive_pipelining_and_a_hand_over_for_good(tmp_path: Path, loop: str) -> None:
    with IngressThread(tmp_path / "ev.db", loop=loop) as srv:
        c = Conn(srv.port)
        c.send(b"".join(post(f"p-{i}") for i in range(5)))  # five requests in one write
        answers = c.answers(5)
        assert [a[0] for a in answers] == [202] * 5 and not any("server" in a[1] for a in answers)
        c.send(post("p-0"))  # a duplicate, still fast
        [(status, headers, body)] = c.answers(1)
        assert (status, json.loads(body), "server" in headers) == (202, {"stored": 0, "duplicates": 1}, False)
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # not the common request: aiohttp's now
        [(status, headers, body)] = c.answers(1)
        assert (status, json.loads(body)) == (200, {"status": "ok"}) and "aiohttp" in headers["server"]
        c.send(post("p-after"))
        [(status, headers, _)] = c.answers(1)
        assert status == 202 and "aiohttp" in headers["server"]  # the connection stays aiohttp's
        c.close()
        assert ids(srv) == [f"p-{i}" for i in range(5)] + ["p-after"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_body_in_later_packets_is_waited_for(tmp_path: Path, loop: str) -> None:
    with IngressThread(tmp_path / "ev.db", loop=loop) as srv:
        c = Conn(srv.port)
        request = post("split-1", body=b'{"n": "' + b"x" * 2000 + b'"}')
        c.send(request[:-1000])
        ingress = srv.app[INGRESS]
        deadline = time.monotonic() + 10
        while not any(conn.waiting for conn in list(ingress.connections)):  # the head is in
            assert time.monotonic() < deadline, "the fast path is not waiting for the body"
            time.sleep(0.01)
        assert ingress.budget.used == 2009  # the body's share, held while it arrives
        c.send(request[-1000:])
        [(status, headers, _)] = c.answers(1)
        c.close()
        assert status == 202 and "server" not in headers
        assert ingress.budget.used == 0
        [row] = event_log.read_after(srv.store, "default", 0, 10)
        assert row.event.data == request.split(b"\r\n\r\n", 1)[1]


def test_what_the_general_handler_answers_is_answered_there(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", token=TOKEN, max_event_bytes=100) as srv:
        auth = f"Authorization: Bearer {TOKEN}\r\n"
        cases = [
            (post("t-1", extra=auth), 202, False),  # the token: fast
            (post("t-2"), 401, True),  # no token
            (post("t-3", extra="Authorization: Bearer wrong\r\n"), 401, True),
            (post("t-4", extra=auth, body=b"x" * 101), 413, True),  # over maxEventBytes
            (post("t-5", path="/Bad_Broker", extra=auth), 404, True),
            (post("t-6", path="/healthz", extra=auth), 405, True),
            (post("t-7", path="/metrics", extra=auth), 405, True),
            (post("t-8", path="/orders", extra=auth), 202, False),
            (post("t-9", extra=auth + "Connection: close\r\n"), 202, True),
            (post("t-10", extra=auth + "ce-time: yesterday\r\n"), 400, True),  # invalid: words from there
            (post("t-11", extra=auth + "ce-subject: caf%C3%A9\r\n"), 202, True),  # percent-encoded
            (post("t-12", extra=auth).replace(b"HTTP/1.1", b"HTTP/1.0"), 202, True),
        ]
        for request, status, general in cases:
            c = Conn(srv.port)
            c.send(request)
            [(got, headers, body)] = c.answers(1)
            c.close()
            assert got == status, (request[:60], body)
            assert ("aiohttp" in headers.get("server", "")) == general, (request[:60], headers)
            if got == 400:
                assert "'time' must be an RFC 3339 timestamp" in json.loads(body)["error"]
        assert ids(srv) == ["t-1", "t-9", "t-11", "t-12"] and ids(srv, "orders") == ["t-8"]


def test_httpx_and_many_connections(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db") as srv, httpx.Client(base_url=srv.url) as client:
        for i in range(50):
            r = client.post(
                "/",
                content=b"{}",
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": f"h-{i}",
                    "ce-source": "/s",
                    "ce-type": "t",
                    "content-type": "application/json",
                },
            )
            assert r.status_code == 202 and "server" not in r.headers
        assert len(ids(srv)) == 50


def test_stopping_closes_idle_fast_connections(tmp_path: Path) -> None:
    srv = IngressThread(tmp_path / "ev.db").__enter__()
    c = Conn(srv.port)
    c.send(post("s-1"))
    assert c.answers(1)[0][0] == 202
    srv.__exit__(None, None, None)
    assert c.closed()
    c.close()


def test_an_idle_connection_closes_after_a_quiet_keep_alive_period(tmp_path: Path) -> None:
    """The keep-alive timer's two cases, driven directly: traffic since it was armed re-arms it,
    none closes the connection."""
    import asyncio

    with IngressThread(tmp_path / "ev.db") as srv:
        c = Conn(srv.port)
        c.send(post("k-1"))
        assert c.answers(1)[0][0] == 202
        ingress = srv.app[INGRESS]
        [conn] = list(ingress.connections)

        async def fire() -> tuple[bool, bool]:
            conn._idle()  # traffic since the timer was armed: re-armed, still open
            first = conn.timer is not None and not conn.closed
            conn._idle()  # nothing since: closed
            return first, conn.transport.is_closing()

        first, closing = asyncio.run_coroutine_threadsafe(fire(), srv.loop).result(5)
        assert first and closing
        assert c.closed()
        c.close()


def test_a_body_that_goes_silent_is_answered_408_and_its_share_returned(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", body_idle_timeout=0.3) as srv:
        ingress = srv.app[INGRESS]
        c = Conn(srv.port)
        c.send(post("silent-1", body=b"x" * 100)[:-50])
        [(status, headers, body)] = c.answers(1)
        assert status == 408 and headers["connection"] == "close" and "server" not in headers
        assert json.loads(body) == {"error": "the request body sent nothing for 0.3s; nothing was stored"}
        assert c.closed()
        c.close()
        assert ingress.budget.used == 0 and ids(srv) == []


def test_a_client_that_shuts_its_side_after_the_request_gets_its_answer(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db") as srv:
        status, answer = srv.raw_half_closed(post("half-1"))
        assert status == 202 and b"server:" not in answer.lower()
        assert ids(srv) == ["half-1"]


def test_a_store_fault_is_the_general_handlers_503_and_stores_nothing(tmp_path: Path) -> None:
    import sqlite3

    with IngressThread(tmp_path / "ev.db") as srv:
        srv.store.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(tmp_path / "ev.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        c = Conn(srv.port)
        c.send(post("locked-1"))
        c.send(post("locked-2", path="/?via=aiohttp"))
        (fast,) = c.answers(1)
        (slow,) = c.answers(1)
        other.execute("ROLLBACK")
        other.close()
        assert "server" not in fast[1] and "aiohttp" in slow[1]["server"]
        assert fast[0] == slow[0] == 503
        for answer in (fast, slow):
            error = json.loads(answer[2])["error"]
            assert error.startswith("cannot store the events now, nothing was stored: ") and "locked" in error
        c.send(post("locked-1"))  # the same connection goes on once the lock is gone
        assert c.answers(1)[0][0] == 202
        c.close()
        assert ids(srv) == ["locked-1"]
