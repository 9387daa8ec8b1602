"""The HTTP/1.1 client deliveries go through: keep-alive connections, one request at a time each.

A delivery is one ``POST`` whose answer is judged by its status and a few headers, with a body
read only up to a limit. This client does that and nothing else, on the event loop's transports:

- the request head and body leave in one write (the head is built by the caller, as bytes);
- the response head is parsed in one pass once ``\\r\\n\\r\\n`` has arrived (1xx answers are
  skipped); a body is framed by ``Content-Length``, ``chunked`` or the end of the connection;
- a connection goes back to its pool (per scheme, host and port, newest first) only when its
  answer was read to the end and neither side said ``Connection: close``; an idle connection is
  dropped after :data:`KEEPALIVE_SECONDS` or when the server closes it;
- a deadline covers connecting, sending, waiting and reading: one timer per exchange;
- a body is buffered up to :data:`HIGH_WATER` bytes before the socket stops being read, so a
  subscriber cannot make evroute buffer without end;
- redirects are not followed, cookies are not kept, no proxy is used, nothing is compressed.

Failures surface as :class:`HttpError` subclasses carrying a one-line message; deciding what
they mean for the event is :mod:`evroute.delivery.http`'s business.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Literal

from multidict import CIMultiDict
from yarl import URL

KEEPALIVE_SECONDS = 30.0
HIGH_WATER = 256 * 1024  # body bytes buffered before reading from the socket pauses
MAX_HEAD_BYTES = 64 * 1024  # a response head (status line and headers) larger than this is refused

ReadState = Literal["eof", "over", "broken", "timeout"]


class HttpError(Exception):
    """A request that got no usable answer; ``str()`` is the one-line reason."""


class InvalidURL(HttpError):
    pass


class ConnectFailed(HttpError):
    pass


class Disconnected(HttpError):
    """The server closed the connection before the response head was complete."""


class BadResponse(HttpError):
    """The response head is not HTTP/1.x."""


class Target:
    """A parsed endpoint URI: where to connect and what to put in the request line."""

    __slots__ = ("auth", "head", "host", "key", "port", "ssl", "where")

    def __init__(self, uri: str) -> None:
        try:
            url = URL(uri)
            host = url.raw_host
            port = url.port
        except (ValueError, TypeError) as exc:
            raise InvalidURL(f"invalid URL {uri!r}") from exc
        if url.scheme not in ("http", "https") or not host or port is None or any(c.isspace() for c in host):
            raise InvalidURL(f"invalid URL {uri!r}")
        self.host = host
        self.port = port
        self.ssl = url.scheme == "https"
        self.key = (url.scheme, host, port)
        bracketed = f"[{host}]" if ":" in host else host
        self.where = f"{host}:{port}"
        default = 443 if self.ssl else 80
        authority = bracketed if port == default else f"{bracketed}:{port}"
        target = url.raw_path_qs or "/"
        # The request line and Host header of every request to this URI; credentials in the URI
        # (``https://user:secret@host/``) become Basic authorization, as browsers and curl do.
        # A route's own Authorization header wins over the URI's credentials.
        self.head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
        self.auth = b""
        if url.user is not None or url.password is not None:
            import base64

            pair = base64.b64encode(f"{url.user or ''}:{url.password or ''}".encode())
            self.auth = b"Authorization: Basic " + pair + b"\r\n"


_targets: dict[str, Target] = {}


def target(uri: str) -> Target:
    """The parsed form of ``uri`` (kept: a worker posts to the same few URIs all day)."""
    found = _targets.get(uri)
    if found is None:
        found = Target(uri)
        if len(_targets) >= 4096:
            _targets.clear()
        _targets[uri] = found
    return found


class Response:
    """One answer: status and headers at once, the body through :meth:`read`."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers

    @property
    def at_eof(self) -> bool:
        """The whole body (possibly none) has arrived and been read."""
        return self._conn.body_done and not self._conn.body

    async def read(self, *, keep: int, limit: int) -> tuple[bytes, ReadState]:
        """Read at most ``limit`` bytes (+1 to notice more), keeping the first ``keep``.

        Never raises for the body: the state says how reading ended (``eof``, ``over`` the
        limit, ``broken`` connection, or ``timeout``) and the bytes kept so far come back.
        """
        return await self._conn.read_body(keep, limit)

    def release(self) -> None:
        """Done with this answer: the connection is pooled if it can carry another request."""
        self._conn.finish()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; its state belongs to the exchange under way, if any."""

    def __init__(self, pool: HttpClient, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.buf = b""
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.paused = False
        self._reset()

    def _reset(self) -> None:
        self.busy = False
        self.head: tuple[int, CIMultiDict[str]] | None = None
        self.head_error: str | None = None
        self.body = bytearray()
        self.body_done = False
        self.broken = False
        self.reusable = True
        self.remaining = 0  # Content-Length bytes still to come
        self.framing = ""  # "length" | "chunked" | "close" | "none"
        self.chunk_left = -1  # chunked: bytes left in the current chunk; -1 = a size line is next
        self.trailers = False  # chunked: the last chunk was seen, trailers until a blank line

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.busy and not self.body_done:
            if self.framing == "close" and self.head is not None and not self.broken:
                self.body_done = True
            else:
                self.broken = True
        self._wake()

    def eof_received(self) -> bool | None:
        if self.framing == "close" and self.head is not None:
            self.body_done = True
        elif self.busy and not self.body_done:
            self.broken = True
        self.reusable = False
        self._wake()
        return None  # close the transport

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for on an idle connection: it cannot be trusted
            self.reusable = False
            self._close()
            return
        if self.head is None:
            self.buf += data
            if not self._parse_head():
                return
            data, self.buf = self.buf, b""
            if not data:
                self._wake()
                return
        self._take_body(data)
        self._wake()

    # ------------------------------------------------------------------ parsing

    def _parse_head(self) -> bool:
        """Parse the status line and headers once complete; skip 1xx answers. True once parsed."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end < 0 and len(self.buf) > MAX_HEAD_BYTES):
                self._fail_head(f"response head over {MAX_HEAD_BYTES} bytes")
                return False
            if end < 0:
                return False
            raw, self.buf = self.buf[:end], self.buf[end + 4 :]
            lines = raw.split(b"\r\n")
            status_line = lines[0]
            if status_line[:7] != b"HTTP/1." or len(status_line) < 12 or status_line[8:9] != b" ":
                self._fail_head(f"invalid status line {status_line[:80]!r}")
                return False
            code = status_line[9:12]
            if not code.isdigit() or (len(status_line) > 12 and status_line[12:13] != b" "):
                self._fail_head(f"invalid status line {status_line[:80]!r}")
                return False
            status = int(code)
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                    self._fail_head(f"invalid header line {line[:80]!r}")
                    return False
                headers.add(
                    name.decode("utf-8", "surrogateescape"),
                    value.strip(b" \t").decode("utf-8", "surrogateescape"),
                )
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            if not self._frame(status, headers, status_line[5:8] == b"1.0"):
                return False
            self.head = (status, headers)
            return True

    def _frame(self, status: int, headers: CIMultiDict[str], http10: bool) -> bool:
        connection = headers.get("Connection", "").lower()
        if http10 or "close" in connection:
            self.reusable = False
        encoding = headers.get("Transfer-Encoding")
        if status in (204, 304):
            self.framing = "none"
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self.framing = "chunked"
            else:
                self.framing = "close"
        elif "Content-Length" in headers:
            lengths = {v.strip() for v in headers.getall("Content-Length")}
            value = lengths.pop() if len(lengths) == 1 else ""
            if not value.isdigit():
                self._fail_head(f"invalid Content-Length {headers.get('Content-Length')!r}")
                return False
            self.remaining = int(value)
            self.framing = "length" if self.remaining else "none"
        else:
            self.framing = "close"
        if self.framing == "none":
            self.body_done = True
        elif self.framing == "close":
            self.reusable = False
        return True

    def _fail_head(self, reason: str) -> None:
        self.head_error = reason
        self.reusable = False
        self._wake()
        self._close()

    def _take_body(self, data: bytes) -> None:
        if self.body_done:
            if data:  # more than the framing announced: do not reuse the connection
                self.reusable = False
            return
        framing = self.framing
        if framing == "length":
            if len(data) >= self.remaining:
                if len(data) > self.remaining:
                    self.reusable = False
                self.body += data[: self.remaining]
                self.remaining = 0
                self.body_done = True
            else:
                self.body += data
                self.remaining -= len(data)
        elif framing == "close":
            self.body += data
        else:
            self._take_chunks(data)
        if len(self.body) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _take_chunks(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        n = len(buf)
        while pos < n:
            if self.chunk_left > 0:
                take = min(self.chunk_left, n - pos)
                self.body += buf[pos : pos + take]
                pos += take
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -2  # the CRLF after the chunk's data
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if n - pos > 4096:
                    self._break_body()
                    return
                break
            line = buf[pos:end]
            pos = end + 2
            if self.chunk_left == -2:
                if line:
                    self._break_body()
                    return
                self.chunk_left = -1
            elif self.trailers:
                if not line:
                    self.body_done = True
                    if pos < n:
                        self.reusable = False
                    self.buf = b""
                    return
            else:
                size = line.split(b";", 1)[0].strip()
                try:
                    self.chunk_left = int(size, 16)
                except ValueError:
                    self._break_body()
                    return
                if self.chunk_left < 0:
                    self._break_body()
                    return
                if self.chunk_left == 0:
                    self.trailers = True
        self.buf = buf[pos:]

    def _break_body(self) -> None:
        self.broken = True
        self.reusable = False
        self.buf = b""
        self._close()

    # ------------------------------------------------------------------ the exchange

    def send(self, data: bytes, deadline: float | None) -> None:
        self.busy = True
        self.timed_out = False
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._expire)
        assert self.transport is not None
        self.transport.write(data)

    def _expire(self) -> None:
        self.timer = None
        self.timed_out = True
        self.reusable = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    async def response(self, where: str) -> Response:
        while self.head is None:
            if self.head_error is not None:
                raise BadResponse(f"bad response from {where}: {self.head_error}")
            if self.timed_out:
                raise TimeoutError
            if self.lost or self.broken:
                raise Disconnected(f"connection closed by {where} before a response")
            await self._wait()
        status, headers = self.head
        return Response(self, status, headers)

    async def read_body(self, keep: int, limit: int) -> tuple[bytes, ReadState]:
        kept = bytearray()
        total = 0
        while True:
            if self.body:
                data = self.body
                self.body = bytearray()
                if self.paused and self.transport is not None and not self.lost:
                    self.paused = False
                    self.transport.resume_reading()
                total += len(data)
                if len(kept) < keep:
                    kept += data[: keep - len(kept)]
                if total > limit:
                    self.reusable = False
                    return bytes(kept), "over"
            if self.body_done:
                return bytes(kept), "eof"
            if self.broken or self.lost:
                return bytes(kept), "broken"
            if self.timed_out:
                return bytes(kept), "timeout"
            await self._wait()

    def finish(self) -> None:
        """The exchange is over: pool the connection if it can carry the next one, else close it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if (
            self.reusable
            and self.body_done
            and not self.body
            and not self.broken
            and not self.lost
            and not self.buf
            and self.transport is not None
            and not self.transport.is_closing()
        ):
            self._reset()
            self.pool.put(self)
        else:
            self._close()

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class HttpClient:
    """Keep-alive connections per (scheme, host, port); call it inside the running loop."""

    def __init__(self, keepalive: float = KEEPALIVE_SECONDS) -> None:
        self.keepalive = keepalive
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self.closed = False
        self._ssl: ssl.SSLContext | None = None

    async def post(self, uri: str, head: bytes, body: bytes, deadline: float | None) -> Response:
        """Send one request (``head``: its header lines after Host, each ending in CRLF, without
        the blank line) and wait for the answer's head. The caller reads the body, then releases."""
        where = target(uri)
        conn = self._idle(where.key)
        if conn is None:
            conn = await self._connect(where, deadline)
        auth = where.auth
        if auth and b"\nauthorization:" in b"\n" + head.lower():
            auth = b""
        conn.send(
            b"".join(
                (where.head, auth, head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
            ),
            deadline,
        )
        try:
            return await conn.response(where.where)
        except BaseException:
            conn.finish()
            raise

    def _idle(self, key: tuple[str, str, int]) -> _Connection | None:
        pool = self.idle.get(key)
        if not pool:
            return None
        now = time.monotonic()
        while pool and now - pool[0].idle_since > self.keepalive:  # oldest first
            pool.popleft()._close()
        while pool:
            conn = pool.pop()  # newest: the one least likely to have been closed by the server
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, where: Target, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, where.key)
        context = self._context() if where.ssl else None
        try:
            async with asyncio.timeout_at(deadline):
                transport, _ = await loop.create_connection(
                    lambda: conn,
                    where.host,
                    where.port,
                    ssl=context,
                    server_hostname=where.host if context is not None else None,
                )
        except ConnectionRefusedError as exc:
            raise ConnectFailed(f"connection refused to {where.where}") from exc
        except OSError as exc:
            import socket

            if isinstance(exc, socket.gaierror):
                raise ConnectFailed(f"cannot resolve host {where.host}: {exc.strerror or exc}") from exc
            raise ConnectFailed(f"cannot connect to {where.where}: {exc.strerror or exc}") from exc
        conn.transport = transport  # uvloop may call connection_made only after this returns
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def put(self, conn: _Connection) -> None:
        if self.closed:
            conn._close()
            return
        conn.idle_since = time.monotonic()
        self.idle.setdefault(conn.key, deque()).append(conn)

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self.closed = True
        for pool in self.idle.values():
            while pool:
                pool.pop()._close()
        self.idle.clear()


__all__ = [
    "HIGH_WATER",
    "KEEPALIVE_SECONDS",
    "BadResponse",
    "ConnectFailed",
    "Disconnected",
    "HttpClient",
    "HttpError",
    "InvalidURL",
    "ReadState",
    "Response",
    "target",
]
