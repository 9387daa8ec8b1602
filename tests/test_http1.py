"""The delivery HTTP/1.1 client against real loopback servers that answer byte by byte what
each test scripts: framing (Content-Length, chunked, until close), interim answers, keep-alive
and its limits, malformed answers, cancellation, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evroute.cloudevent import make_event, to_binary
from evroute.delivery import deliver, new_session
from evroute.delivery.http1 import (
    HIGH_WATER,
    BadResponse,
    Disconnected,
    HttpClient,
    InvalidURL,
    target,
)
from evroute.delivery.outcome import Kind, Outcome
from evroute.routes.model import Delivery, Subscriber

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Raw:
    """A loopback TCP server; ``script(reader, writer, n)`` answers the n-th request of the server."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self.script(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(*parts: bytes, close: bool = False, pause: float = 0.0) -> Script:
    """Write ``parts`` one by one (each its own TCP segment, ``pause`` apart), then maybe hang up."""

    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if close:
            writer.close()

    return script


def event() -> Any:
    return make_event(type="order.placed", source="/shop", id="order-1", data=b'{"order": 1}')


def reply_event() -> Any:
    return make_event(type="order.reserved", source="/inventory", id="res-1", data=b'{"ok": true}')


async def post(url: str, session: HttpClient | None = None, **delivery: Any) -> Outcome:
    own = session is None
    client = session or new_session()
    try:
        return await deliver(
            Subscriber(uri=url),
            event(),
            route="inventory",
            broker="default",
            attempt=1,
            delivery=Delivery(**{"timeout": 5.0, **delivery}),
            headers={},
            signing_secret=None,
            session=client,
        )
    finally:
        if own:
            await client.close()


def binary_reply_head(body: bytes, framing: bytes) -> bytes:
    headers, _ = to_binary(reply_event())
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return b"HTTP/1.1 200 OK\r\n" + lines.encode() + framing + b"\r\n"


# --------------------------------------------------------------------------- framing


def test_a_chunked_reply_split_everywhere_arrives_whole_and_the_connection_is_reused() -> None:
    body = b'{"ok": true}'
    wire = (
        binary_reply_head(body, b"Transfer-Encoding: chunked\r\n")
        + b"5;ext=1\r\n"
        + body[:5]
        + b"\r\n"
        + f"{len(body) - 5:x}\r\n".encode()
        + body[5:]
        + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    # Every byte its own segment: the head, the chunk sizes and the data all arrive in pieces.
    pieces = [wire[i : i + 1] for i in range(len(wire))]

    async def main() -> tuple[list[Outcome], Raw]:
        async with Raw(answer(*pieces)) as server:
            session = new_session()
            outcomes = [await post(server.url, session) for _ in range(2)]
            await session.close()
        return outcomes, server

    outcomes, server = asyncio.run(main())
    for outcome in outcomes:
        assert outcome.kind is Kind.SUCCESS and outcome.status == 200
        assert outcome.reply is not None and outcome.reply.data == body
        assert outcome.reply.id == "res-1"
    assert server.connections == 1


def test_a_body_until_the_connection_closes() -> None:
    body = b'{"ok": true}'
    wire = b"HTTP/1.0 200 OK\r\n" + binary_reply_head(body, b"").split(b"\r\n", 1)[1] + body

    async def main() -> tuple[list[Outcome], Raw]:
        async with Raw(answer(wire, close=True)) as server:
            session = new_session()
            outcomes = [await post(server.url, session) for _ in range(2)]
            await session.close()
        return outcomes, server

    outcomes, server = asyncio.run(main())
    for outcome in outcomes:
        assert outcome.kind is Kind.SUCCESS and outcome.reply is not None and outcome.reply.data == body
    assert server.connections == 2  # a body framed by the close cannot leave the connection usable


def test_interim_answers_are_skipped() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
    )

    async def main() -> Outcome:
        async with Raw(answer(wire)) as server:
            return await post(server.url)

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status) == (Kind.SUCCESS, 202)


@pytest.mark.parametrize(
    ("wire", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        # More bytes than the Content-Length announced: the next answer could not be trusted.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", False),
    ],
)
def test_which_answers_leave_the_connection_for_the_next_request(wire: bytes, reused: bool) -> None:
    async def main() -> Raw:
        async with Raw(answer(wire)) as server:
            session = new_session()
            for _ in range(3):
                assert (await post(server.url, session)).kind is Kind.SUCCESS
            await session.close()
        return server

    server = asyncio.run(main())
    assert server.connections == (1 if reused else 3)


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def main() -> tuple[list[Outcome], Raw]:
        async with Raw(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
            session = new_session()
            first = await post(server.url, session)
            for writer in server.writers:  # the server ends its idle keep-alive connections
                writer.close()
            await asyncio.sleep(0.05)  # let the hang-up reach the client
            second = await post(server.url, session)
            await session.close()
        return [first, second], server

    outcomes, server = asyncio.run(main())
    assert [o.kind for o in outcomes] == [Kind.SUCCESS, Kind.SUCCESS]
    assert server.connections == 2


def test_idle_connections_past_the_keepalive_are_not_reused() -> None:
    async def main() -> Raw:
        async with Raw(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
            session = HttpClient(keepalive=0.0)
            for _ in range(2):
                assert (await post(server.url, session)).kind is Kind.SUCCESS
            await session.close()
        return server

    assert asyncio.run(main()).connections == 2


def test_bytes_on_an_idle_connection_close_it() -> None:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 500 Unasked\r\nContent-Length: 0\r\n\r\n")  # nobody asked

    async def main() -> tuple[list[Outcome], Raw]:
        async with Raw(script) as server:
            session = new_session()
            first = await post(server.url, session)
            await asyncio.sleep(0.2)
            second = await post(server.url, session)
            await session.close()
        return [first, second], server

    outcomes, server = asyncio.run(main())
    assert [(o.kind, o.status) for o in outcomes] == [(Kind.SUCCESS, 200), (Kind.SUCCESS, 200)]
    assert server.connections == 2


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"HTTP/2 200\r\n\r\n", "invalid status line b'HTTP/2 200'"),
        (b"ICY 200 OK\r\n\r\n", "invalid status line b'ICY 200 OK'"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "invalid status line b'HTTP/1.1 2x0 OK'"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid header line b'no colon here'"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "invalid header line b' folded: x'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length '-1'"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "invalid Content-Length '1'",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", "response head over 65536 bytes"),
    ],
)
def test_a_malformed_answer_is_a_retriable_bad_response(wire: bytes, reason: str) -> None:
    async def main() -> tuple[Outcome, str]:
        async with Raw(answer(wire)) as server:
            return await post(server.url), server.url

    outcome, url = asyncio.run(main())
    where = url.split("//")[1].split("/")[0]
    assert (outcome.kind, outcome.status, outcome.error) == (
        Kind.RETRIABLE,
        None,
        f"bad response from {where}: {reason}",
    )


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    ],
)
def test_a_reply_cut_short_is_retried(wire: bytes) -> None:
    wire = wire.replace(
        b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: application/cloudevents+json\r\n"
    )

    async def main() -> Outcome:
        async with Raw(answer(wire, close=True)) as server:
            return await post(server.url)

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error) == (
        Kind.RETRIABLE,
        200,
        "HTTP 200: reply body cut short",
    )


def test_a_hang_up_mid_head_is_a_disconnect() -> None:
    async def main() -> Outcome:
        async with Raw(answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)) as server:
            return await post(server.url)

    outcome = asyncio.run(main())
    assert outcome.kind is Kind.RETRIABLE and outcome.error is not None
    assert outcome.error.startswith("connection closed by 127.0.0.1:") and outcome.error.endswith(
        "before a response"
    )


def test_a_header_value_with_a_line_break_is_permanent_and_nothing_is_sent() -> None:
    """Routes files refuse such values; the library call is guarded all the same."""

    async def main() -> tuple[Outcome, Raw]:
        async with Raw(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
            session = new_session()
            outcome = await deliver(
                Subscriber(uri=server.url),
                event(),
                route="r",
                broker="default",
                attempt=1,
                delivery=Delivery(timeout=5.0),
                headers={"X-Team": "stock\r\nX-Injected: 1"},
                signing_secret=None,
                session=session,
            )
            await session.close()
        return outcome, server

    outcome, server = asyncio.run(main())
    assert (outcome.kind, outcome.error) == (
        Kind.PERMANENT,
        "cannot send the request: a header value contains a line break",
    )
    assert server.requests == []


def test_a_cancelled_attempt_closes_its_connection() -> None:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await asyncio.sleep(30)  # never answers the first request
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def main() -> tuple[Outcome, Raw, int]:
        async with Raw(script) as server:
            session = new_session()
            task = asyncio.create_task(post(server.url, session))
            while not server.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            pooled = sum(len(p) for p in session.idle.values())
            outcome = await post(server.url, session)
            await session.close()
        return outcome, server, pooled

    outcome, server, pooled = asyncio.run(main())
    assert pooled == 0
    assert outcome.kind is Kind.SUCCESS
    assert server.connections == 2


def test_a_body_is_buffered_only_up_to_the_high_water_mark() -> None:
    """A subscriber streaming faster than evroute reads: the socket stops being read."""

    async def main() -> int:
        async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
            try:
                for _ in range(100_000_000 // 65536):
                    writer.write(b"x" * 65536)
                    await writer.drain()
            except ConnectionError:
                pass

        async with Raw(script) as server:
            session = HttpClient()
            loop = asyncio.get_running_loop()
            response = await session.post(server.url, b"", b"", loop.time() + 5)
            await asyncio.sleep(0.3)  # nobody reads: the client must stop taking bytes
            buffered = len(response._conn.body)
            response.release()
            await session.close()
        return buffered

    buffered = asyncio.run(main())
    assert 0 < buffered <= HIGH_WATER + 256 * 1024  # the mark plus what one read can bring


# --------------------------------------------------------------------------- targets


def test_targets() -> None:
    assert target("http://127.0.0.1:8080/a/b?x=1").head == (
        b"POST /a/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    )
    assert target("http://example.com/").head == b"POST / HTTP/1.1\r\nHost: example.com\r\n"
    assert target("http://example.com").head == b"POST / HTTP/1.1\r\nHost: example.com\r\n"
    assert target("https://example.com:443/p").head == b"POST /p HTTP/1.1\r\nHost: example.com\r\n"
    assert target("http://[::1]:9/p").head == b"POST /p HTTP/1.1\r\nHost: [::1]:9\r\n"
    assert target("http://bücher.example/ä").head == (
        b"POST /%C3%A4 HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n"
    )
    with_user = target("http://us%20er:p%40ss@127.0.0.1:9/")
    assert with_user.head == b"POST / HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"
    assert with_user.auth == b"Authorization: Basic dXMgZXI6cEBzcw==\r\n"  # "us er:p@ss"
    for bad in (
        "ftp://example.com/",
        "http:///nohost",
        "http://exa mple.com/",
        "http://h:99999/",
        "nonsense",
    ):
        with pytest.raises(InvalidURL, match="invalid URL"):
            target(bad)


def test_errors_are_one_line_classes() -> None:
    assert issubclass(BadResponse, Exception) and issubclass(Disconnected, Exception)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a test certificate with the openssl command: {exc}")
    return cert, key


async def _tls_server(cert: Path, key: Path) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.read()})
        return web.Response(status=200, text=json.dumps({"ok": True}))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"https://localhost:{port}/hook", seen


def test_https_delivery_to_a_trusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))

    async def main() -> tuple[Outcome, list[dict[str, Any]]]:
        runner, url, seen = await _tls_server(*certificate)
        try:
            return await post(url), seen
        finally:
            await runner.cleanup()

    outcome, seen = asyncio.run(main())
    assert (outcome.kind, outcome.status) == (Kind.SUCCESS, 200)
    [request] = seen
    assert request["body"] == b'{"order": 1}' and request["headers"]["ce-id"] == "order-1"
    assert request["headers"]["Host"].startswith("localhost:")


def test_https_to_an_untrusted_certificate_is_a_retriable_connect_failure(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def main() -> Outcome:
        runner, url, _ = await _tls_server(*certificate)
        try:
            return await post(url)
        finally:
            await runner.cleanup()

    outcome = asyncio.run(main())
    assert outcome.kind is Kind.RETRIABLE and outcome.error is not None
    assert (
        outcome.error.startswith("cannot connect to localhost:")
        and "CERTIFICATE_VERIFY_FAILED" in outcome.error
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, "Basic dXNlcjpzM2NyZXQ="), ({"authorization": "Bearer route-token"}, "Bearer route-token")],
)
def test_credentials_in_the_uri_are_basic_authorization_unless_the_route_sets_its_own(
    headers: dict[str, str], expected: str
) -> None:
    async def main() -> Raw:
        async with Raw(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
            session = new_session()
            url = server.url.replace("http://", "http://user:s3cret@")
            outcome = await deliver(
                Subscriber(uri=url),
                event(),
                route="r",
                broker="default",
                attempt=1,
                delivery=Delivery(timeout=5.0),
                headers=headers,
                signing_secret=None,
                session=session,
            )
            assert outcome.kind is Kind.SUCCESS
            await session.close()
        return server

    [request] = asyncio.run(main()).requests
    values = [
        line.split(b":", 1)[1].strip().decode()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"authorization:")
    ]
    assert values == [expected]
