"""``evroute.client.send`` against a real ingress on a loopback port."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingress_server import IngressThread

from evroute import tracing
from evroute.client import send
from evroute.cloudevent import CloudEvent, make_event
from evroute.errors import InvalidInput, RuntimeFault
from evroute.store import log as event_log

from receiver import Receiver, Reply

TOKEN = "tok-123"


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[IngressThread]:
    with IngressThread(tmp_path / "ev.db", max_event_bytes=2048) as srv:
        yield srv


def event(i: int, **kw: object) -> CloudEvent:
    return make_event(type="order.placed", source="/shop", id=f"o-{i}", **kw)  # type: ignore[arg-type]


class _AnyTrace:
    def __eq__(self, other: object) -> bool:
        return tracing.parse(other) is not None


ANY_TRACE = _AnyTrace()


def test_single_event_goes_in_binary_mode_and_is_stored_as_sent(ingress: IngressThread) -> None:
    ev = event(1, data=bytes(range(200)), datacontenttype="application/octet-stream", extensions={"n": 5})
    assert send(ingress.url + "/orders", [ev]) == (1, 0)
    assert send(ingress.url + "/orders", [ev]) == (0, 1)
    (row,) = event_log.read_after(ingress.store, "orders", 0)
    assert row.event.data == ev.data
    # binary mode carries every value as text: the extension arrives as the string "5"; an event
    # without a trace is given one where it is stored
    assert dict(row.event.attributes) == {**ev.attributes, "n": "5", "traceparent": ANY_TRACE}
    assert ingress.woken == ["orders"]


def test_many_events_go_as_one_batch(ingress: IngressThread) -> None:
    events = [event(i, data=b'{"i":%d}' % i, datacontenttype="application/json") for i in range(3)]
    assert send(ingress.url, events) == (3, 0)
    assert send(ingress.url + "/", [*events, event(9)]) == (1, 3)
    rows = event_log.read_after(ingress.store, "default", 0)
    assert [r.event.id for r in rows] == ["o-0", "o-1", "o-2", "o-9"]
    assert [r.event.with_attributes(traceparent=None).attributes for r in rows[:3]] == [
        e.attributes for e in events
    ]  # structured keeps types
    assert ingress.woken == ["default", "default"]  # one wake-up per request, not per event
    assert send(ingress.url, []) == (0, 0)


def test_refusals_carry_the_ingress_message(ingress: IngressThread) -> None:
    bad = CloudEvent({"specversion": "1.0", "id": "x", "source": "/s", "type": "t", "time": "tuesday"})
    with pytest.raises(InvalidInput) as info:
        send(ingress.url, [bad])
    assert info.value.message == (
        f"the ingress at {ingress.url} refused the event (400): attribute 'time' must be an RFC 3339 "
        "timestamp, got 'tuesday'"
    )
    with pytest.raises(InvalidInput) as info:
        send(ingress.url, [event(1), bad])
    assert "refused the events (400): event 1: attribute 'time'" in info.value.message
    with pytest.raises(InvalidInput) as info:
        send(ingress.url, [event(2, data=b"x" * 3000)])
    assert "(413): binary-mode request body is over 2048 bytes" in info.value.message
    with pytest.raises(InvalidInput) as info:
        send(ingress.url + "/Not_A_Broker", [event(3)])
    assert "(404): no such path '/Not_A_Broker'" in info.value.message
    assert event_log.count_after(ingress.store, "default", 0) == 0


def test_token(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", token=TOKEN) as srv:
        with pytest.raises(InvalidInput) as info:
            send(srv.url, [event(1)])
        assert info.value.message == (
            f"the ingress at {srv.url} requires a token (401): pass the worker's token with --token or EVROUTE_TOKEN"
        )
        with pytest.raises(InvalidInput) as info:
            send(srv.url, [event(1)], token="wrong")
        assert "the token given was refused; check --token / EVROUTE_TOKEN" in info.value.message
        assert send(srv.url, [event(1)], token=TOKEN) == (1, 0)


def test_unreachable_and_failing_ingress(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(RuntimeFault) as info:
            send(url, [event(1)], timeout=5)
    assert info.value.message.startswith(f"cannot reach the ingress at {url}: ")
    assert "evroute worker --listen" in info.value.message

    for bad_url in ("ftp://127.0.0.1/", "not a url"):
        with pytest.raises(InvalidInput) as bad:
            send(bad_url, [event(1)])
        assert bad.value.message.startswith(f"--url {bad_url!r} is not a usable http(s) URL")

    with IngressThread(tmp_path / "ev.db") as srv:
        srv.store.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(tmp_path / "ev.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(RuntimeFault) as info:
                send(srv.url, [event(1)])
            assert info.value.message.startswith(
                f"the ingress at {srv.url} failed (503): cannot store the events"
            )
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_a_server_that_is_not_an_ingress() -> None:
    receiver = Receiver(lambda _r: Reply(status=200, body=b"<html>hello</html>")).start()
    try:
        with pytest.raises(RuntimeFault) as info:
            send(receiver.url, [event(1)])
        assert "answered 200 without the stored/duplicates counts" in info.value.message
    finally:
        receiver.stop()
    broken = Receiver(lambda _r: Reply(status=502, body=b"bad gateway")).start()
    try:
        with pytest.raises(RuntimeFault) as info:
            send(broken.url, [event(1)])
        assert info.value.message == f"the ingress at {broken.url} failed (502): bad gateway"
    finally:
        broken.stop()
