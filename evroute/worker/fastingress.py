"""The ingress's common request, served without aiohttp's request machinery.

Nearly every request a producer sends is one event in binary mode: ``POST /`` or
``POST /<broker>`` with ``ce-*`` headers and a ``Content-Length`` body that arrives with its
headers. Each connection to the ingress's port starts with this protocol, which parses such a
request itself and answers it exactly as :class:`evroute.worker.ingress.Ingress` would (the
same checks, the same shared commit, the same ``202 {"stored": 1, "duplicates": 0}``).

Anything else hands the connection to aiohttp for good, with every byte received so far: a
``GET``, another path, a token that does not match, structured or batch mode, an event the
fast decoder steps aside from (:mod:`evroute.worker.fastparse`), a body that does not fit in
the in-flight budget, ``Transfer-Encoding``, ``Expect``, ``Connection: close``, HTTP/1.0, a request over the size
limit or the in-flight budget, an event over ``maxEventBytes``, tracing spans being exported.
There the general handler decides and words the answer (400, 401, 404, 405, 408, 413, 503).
A hand-over happens only between answers, so answers stay in request order.

Requests on one connection are taken one at a time (reading pauses while an event is being
committed), as aiohttp does. A body that follows its head in later packets holds its share of
the in-flight budget while it arrives and is answered ``408`` after ``body_idle_timeout``
seconds of silence, as the general handler does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from evroute import tracing
from evroute.cloudevent import check_size, http_mode
from evroute.errors import EventTooLarge, InvalidInput
from evroute.worker.fastparse import binary_event

if TYPE_CHECKING:
    from evroute.worker.ingress import Ingress

MAX_HEAD_BYTES = 8190  # a longer request head goes to aiohttp, which answers it
PAUSE_BYTES = 256 * 1024  # buffered ahead of the answers before reading pauses
KEEPALIVE_SECONDS = 75.0  # aiohttp's keep-alive timeout for idle connections
_HANDED_OVER_HEADERS = frozenset(("transfer-encoding", "expect", "upgrade", "content-encoding"))

_date = ["", 0]


def _http_date() -> str:
    now = int(time.time())
    if _date[1] != now:
        _date[0], _date[1] = formatdate(now, usegmt=True), now
    return str(_date[0])


def _answer(status: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nDate: {_http_date()}\r\n{extra}\r\n"
    ).encode("latin-1") + body


_ONE = json.dumps({"stored": 1, "duplicates": 0}).encode()
_DUPLICATE = json.dumps({"stored": 0, "duplicates": 1}).encode()


class _Head:
    """A request head of the common shape; its body spans ``size`` to ``total`` in the buffer."""

    __slots__ = ("broker", "headers", "length", "size", "total")

    def __init__(self, headers: CIMultiDict[str], broker: str, size: int, length: int) -> None:
        self.headers = headers
        self.broker = broker
        self.size = size
        self.length = length
        self.total = size + length


class FastIngress(asyncio.Protocol):
    """One connection to the ingress's port (see the module's text)."""

    def __init__(self, ingress: Ingress, fallback: Callable[[], Any], reserved: frozenset[str]) -> None:
        self.ingress = ingress
        self.fallback = fallback
        self.reserved = reserved
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # an event of this connection is being committed
        self.closed = False
        self.handed = False
        self.paused = False
        self.active = False  # something arrived since the idle timer was armed
        self.timer: asyncio.TimerHandle | None = None
        self.waiting: _Head | None = None  # a request whose body is on its way
        self.ticket: Any = None  # its share of the in-flight budget
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_active = False
        self.eof = False  # the client shut its sending side while its request was being stored

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.ingress.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS, self._idle)

    def _idle(self) -> None:
        """Close a connection that sent nothing for a keep-alive period (as aiohttp does)."""
        self.timer = None
        if self.handed or self.closed or self.transport is None:
            return
        if self.active or self.busy:
            self.active = False
            self.timer = asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS, self._idle)
            return
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._leave()

    def _leave(self) -> None:
        """No longer this protocol's connection: drop its waits, timers and place in the set."""
        self._end_wait()
        self.ingress.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.active = self.body_active = True
        if not self.busy:
            self._next()
        elif len(self.buf) > PAUSE_BYTES and self.transport is not None and not self.paused:
            self.paused = True  # a client sending ahead of its answers waits for them
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.busy:  # the client sent its request and shut its side: answer it, then close
            self.eof = True
            return True
        return None  # close: nothing under way, or a request cut short that has nothing to answer

    # ------------------------------------------------------------------ requests

    def _next(self) -> None:
        """Take the next request in the buffer once its head and its whole body are there."""
        while self.buf and not self.busy and not self.closed:
            head = self.waiting
            if head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD_BYTES:
                        self._hand_over()
                    return
                head = self._head(end)
                if head is None:
                    self._hand_over()
                    return
            if len(self.buf) < head.total:
                if self.waiting is None and not self._wait_for_body(head):
                    self._hand_over()
                return
            self._end_wait()
            if not self._take(head):
                self._hand_over()
                return

    def _head(self, end: int) -> _Head | None:
        """The head ending at ``end`` if it is the common request's, else None."""
        if end > MAX_HEAD_BYTES:
            return None
        lines = self.buf[:end].split(b"\r\n")
        method, _, rest = lines[0].partition(b" ")
        target, _, version = rest.partition(b" ")
        if method != b"POST" or version != b"HTTP/1.1" or target[:1] != b"/":
            return None
        try:
            path = target.decode("ascii")
        except UnicodeDecodeError:
            return None
        if path in self.reserved or "?" in path or "%" in path:
            return None
        broker = "default" if path == "/" else path[1:]
        from evroute.worker.ingress import BROKER_NAME

        if not BROKER_NAME.match(broker):
            return None
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                return None
            key = name.decode("latin-1")
            if key.lower() in _HANDED_OVER_HEADERS:
                return None
            headers.add(key, value.strip(b" \t").decode("utf-8", "surrogateescape"))
        if "close" in headers.get("Connection", "").lower():
            return None
        lengths = headers.getall("Content-Length", [])
        if len(lengths) != 1 or not lengths[0].isdigit():
            return None
        length = int(lengths[0])
        ingress = self.ingress
        if length > ingress.max_event_bytes or ingress.stopping or tracing.exporting():
            return None
        if ingress.token_required and not ingress.authorized(headers, path):
            return None
        if http_mode(headers) != "binary":
            return None
        return _Head(headers, broker, end + 4, length)

    def _wait_for_body(self, head: _Head) -> bool:
        """The body is on its way: hold its share of the in-flight budget and time its silence
        (False when the budget has no room: the general handler answers 503)."""
        ticket = self.ingress.budget.ticket()
        if not ticket.take(head.length):
            return False
        self.waiting, self.ticket, self.body_active = head, ticket, False
        self.body_timer = asyncio.get_running_loop().call_later(
            self.ingress.body_idle_timeout, self._body_silent
        )
        return True

    def _body_silent(self) -> None:
        self.body_timer = None
        if self.waiting is None or self.closed or self.transport is None:
            return
        if self.body_active:
            self.body_active = False
            self.body_timer = asyncio.get_running_loop().call_later(
                self.ingress.body_idle_timeout, self._body_silent
            )
            return
        self._end_wait()
        message = self.ingress.silent_body()
        self.transport.write(
            _answer("408 Request Timeout", json.dumps({"error": message}).encode(), "Connection: close\r\n")
        )
        self.transport.close()

    def _end_wait(self) -> None:
        self.waiting = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None

    def _take(self, head: _Head) -> bool:
        """Decode, check and submit the request whose body is all here; False: not ours."""
        ingress = self.ingress
        body = self.buf[head.size : head.total]
        try:
            event = binary_event(head.headers, body)
            if event is None:
                return False
            check_size(event, ingress.max_event_bytes)
        except (EventTooLarge, InvalidInput):
            return False
        ticket = ingress.budget.ticket()  # the body is read: it only has to fit, as in read_body
        if not ticket.take(head.length):
            return False
        ticket.release()
        self.buf = self.buf[head.total :]
        events = tracing.from_request(head.headers, [event], head.broker)
        self.busy = True
        future = ingress.committer.submit(head.broker, events)
        broker = head.broker
        future.add_done_callback(lambda f: self._stored(f, broker, len(events)))
        return True

    def _stored(self, future: asyncio.Future[tuple[int, int]], broker: str, n: int) -> None:
        self.busy = False
        try:
            stored, duplicates = future.result()
            answer = _answer("202 Accepted", _ONE if (stored, duplicates) == (1, 0) else _DUPLICATE)
        except Exception as exc:  # logged once, even when the client has gone
            message = self.ingress.not_stored(exc, n, broker)
            answer = _answer("503 Service Unavailable", json.dumps({"error": message}).encode())
        if self.closed or self.transport is None:
            return
        self.transport.write(answer)
        if self.ingress.stopping or self.eof:
            self.transport.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.buf:
            self._next()

    def _hand_over(self) -> None:
        """From here on aiohttp serves this connection, starting with what is buffered."""
        if self.handed or self.transport is None:
            return
        self.handed = True
        self._leave()
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        handler = self.fallback()
        transport, buffered = self.transport, self.buf
        self.buf = b""
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buffered:
            handler.data_received(buffered)

    def close(self) -> None:
        """The server is stopping: an idle connection closes now, a busy one after its answer."""
        if self.transport is not None and not self.busy:
            self.transport.close()


__all__ = ["FastIngress"]
