"""HTTP delivery against real aiohttp servers on 127.0.0.1, one event loop per test."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from helpers import free_port

from evroute.cloudevent import (
    HOPS,
    STRUCTURED_CT,
    CloudEvent,
    from_http,
    make_event,
    to_binary,
    to_json,
    to_structured,
)
from evroute.delivery import deliver, new_session
from evroute.delivery.http import deliver_http
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import HOP_LIMIT
from evroute.routes.model import Delivery, Subscriber

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]  # names lower-cased
    raw_headers: list[tuple[str, str]]
    body: bytes
    peer: Any


@dataclass
class Server:
    """A loopback aiohttp server in the test's own loop that records every request."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Server:
        async def record(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
            headers = {k.lower(): v for k, v in request.headers.items()}
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.seen.append(Seen(request.path, headers, raw, body, peer))
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


def answer(status: int = 200, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body or None, headers=dict(headers or {}))

    return handler


def event(**extra: Any) -> CloudEvent:
    return make_event(
        type="order.placed",
        source="/shop",
        id="order-1",
        subject='café "q" 100%',
        time="2024-05-01T10:00:00Z",
        data=b'{"order": 1, "total": 9.5}',
        datacontenttype="application/json",
        extensions={"tenant": "ä/b", "priority": 7, "rush": True, **extra},
    )


async def post(
    server_url: str,
    ev: CloudEvent,
    *,
    delivery: Delivery | None = None,
    headers: Mapping[str, str] | None = None,
    secret: str | None = None,
    attempt: int = 1,
    path: str = "/hook",
    max_reply_bytes: int | None = None,
    max_event_bytes: int | None = None,
) -> Outcome:
    session = new_session()
    try:
        if max_reply_bytes is not None:
            return await deliver_http(
                server_url + path,
                ev,
                attempt=attempt,
                delivery=delivery or Delivery(timeout=10.0),
                headers=headers or {},
                signing_secret=secret,
                session=session,
                max_reply_bytes=max_reply_bytes,
            )
        return await deliver(
            Subscriber(uri=server_url + path),
            ev,
            route="inventory",
            broker="default",
            attempt=attempt,
            delivery=delivery or Delivery(timeout=10.0),
            headers=headers or {},
            signing_secret=secret,
            session=session,
            max_event_bytes=max_event_bytes,
        )
    finally:
        await session.close()


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


# --------------------------------------------------------------------------- requests


def test_binary_mode_headers_and_body_exact() -> None:
    async def main() -> tuple[Outcome, Server]:
        async with Server(answer(202)) as server:
            outcome = await post(
                server.url,
                event(),
                attempt=3,
                headers={
                    "Authorization": "Bearer t0k",
                    "X-Team": "stock",
                    "ce-id": "forged",
                    "Content-Type": "x/y",
                },
            )
        return outcome, server

    outcome, server = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error, outcome.reply) == (Kind.SUCCESS, 202, None, None)
    [req] = server.seen
    h = req.headers
    assert req.path == "/hook"
    assert req.body == b'{"order": 1, "total": 9.5}'
    assert h["content-type"] == "application/json"
    assert h["ce-specversion"] == "1.0"
    assert h["ce-id"] == "order-1"
    assert h["ce-source"] == "/shop"
    assert h["ce-type"] == "order.placed"
    assert h["ce-time"] == "2024-05-01T10:00:00Z"
    # HTTP binding: non-ASCII, '"', '%' and space are percent-encoded in ce- header values.
    assert h["ce-subject"] == "caf%C3%A9%20%22q%22%20100%25"
    assert h["ce-tenant"] == "%C3%A4/b"
    assert h["ce-priority"] == "7"
    assert h["ce-rush"] == "true"
    assert "ce-datacontenttype" not in h
    assert h["prefer"] == "reply"
    assert h["evroute-attempt"] == "3"
    assert h["authorization"] == "Bearer t0k"
    assert h["x-team"] == "stock"
    # A route's headers cannot replace the ones that carry the event.
    assert [v for k, v in req.raw_headers if k.lower() == "ce-id"] == ["order-1"]
    assert [v for k, v in req.raw_headers if k.lower() == "content-type"] == ["application/json"]
    assert not any(k.lower().startswith("webhook-") for k in h)
    # What arrived decodes back to the same event (binary mode carries every value as text).
    [back] = from_http(h, req.body)
    assert dict(back.attributes) == {**event().attributes, "priority": "7", "rush": "true"}
    assert back.data == event().data


def test_binary_mode_without_datacontenttype_sends_no_content_type() -> None:
    bare = make_event(type="ping", source="/s", id="p-1", data=b"\x00\xffraw")
    empty = make_event(type="ping", source="/s", id="p-2")

    async def main() -> Server:
        async with Server(answer(200)) as server:
            assert (await post(server.url, bare)).kind is Kind.SUCCESS
            assert (await post(server.url, empty)).kind is Kind.SUCCESS
        return server

    server = asyncio.run(main())
    first, second = server.seen
    assert "content-type" not in first.headers and first.body == b"\x00\xffraw"
    assert "content-type" not in second.headers and second.body == b""
    assert from_http(first.headers, first.body)[0] == bare
    assert from_http(second.headers, second.body)[0] == empty


def test_structured_mode() -> None:
    ev = event()

    async def main() -> Server:
        async with Server(answer(200)) as server:
            outcome = await post(
                server.url, ev, delivery=Delivery(format="json"), headers={"X-Team": "stock"}
            )
            assert outcome.kind is Kind.SUCCESS
        return server

    [req] = asyncio.run(main()).seen
    assert req.headers["content-type"] == STRUCTURED_CT
    assert req.body == to_json(ev)
    assert json.loads(req.body)["data"] == {"order": 1, "total": 9.5}
    assert not any(k.startswith("ce-") for k in req.headers)
    assert req.headers["prefer"] == "reply"
    assert req.headers["evroute-attempt"] == "1"
    assert req.headers["x-team"] == "stock"
    [back] = from_http(req.headers, req.body)
    assert back.attributes == ev.attributes
    assert back.data == b'{"order":1,"total":9.5}'  # JSON data travels as JSON in structured mode


@pytest.mark.parametrize("fmt", ["binary", "json"])
def test_signature_verifies_with_the_standardwebhooks_library(fmt: str) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks", reason="standardwebhooks is not installed")
    ev = event()

    async def main() -> Server:
        async with Server(answer(200)) as server:
            outcome = await post(server.url, ev, delivery=Delivery(format=fmt), secret=SECRET)
            assert outcome.kind is Kind.SUCCESS
        return server

    [req] = asyncio.run(main()).seen
    assert req.headers["webhook-id"] == "order-1"
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    assert req.headers["webhook-signature"].startswith("v1,")
    standardwebhooks.Webhook(SECRET).verify(req.body, req.headers)
    tampered = dict(req.headers, **{"webhook-id": "order-2"})
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(req.body, tampered)


def test_unusable_signing_secret_is_permanent_and_sends_nothing() -> None:
    async def main() -> tuple[Outcome, Server]:
        async with Server(answer(200)) as server:
            outcome = await post(server.url, event(), secret="whsec_")
        return outcome, server

    outcome, server = asyncio.run(main())
    assert outcome.kind is Kind.PERMANENT
    assert (
        outcome.error
        == "cannot sign the request: signing secret is empty (expected whsec_ followed by base64)"
    )
    assert server.seen == []


# --------------------------------------------------------------------------- statuses

STATUSES = [
    (200, Kind.SUCCESS),
    (201, Kind.SUCCESS),
    (204, Kind.SUCCESS),
    (301, Kind.PERMANENT),
    (302, Kind.PERMANENT),
    (400, Kind.PERMANENT),
    (401, Kind.PERMANENT),
    (403, Kind.PERMANENT),
    (404, Kind.RETRIABLE),
    (408, Kind.RETRIABLE),
    (409, Kind.RETRIABLE),
    (410, Kind.PERMANENT),
    (422, Kind.PERMANENT),
    (429, Kind.RETRIABLE),
    (500, Kind.RETRIABLE),
    (502, Kind.RETRIABLE),
    (503, Kind.RETRIABLE),
]


def test_each_status_class() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/elsewhere":
            return web.Response(status=200)
        status = int(request.path.rsplit("/", 1)[1])
        headers = {"Location": "/elsewhere"} if status in (301, 302) else {}
        body = None if status == 204 else f"answer {status}".encode()
        return web.Response(status=status, body=body, headers=headers)

    async def main() -> tuple[list[Outcome], Server]:
        async with Server(handler) as server:
            session = new_session()
            outcomes = []
            for status, _ in STATUSES:
                outcomes.append(
                    await deliver_http(
                        f"{server.url}/status/{status}",
                        event(),
                        attempt=1,
                        delivery=Delivery(timeout=10.0),
                        headers={},
                        signing_secret=None,
                        session=session,
                    )
                )
            await session.close()
        return outcomes, server

    outcomes, server = asyncio.run(main())
    for (status, kind), outcome in zip(STATUSES, outcomes, strict=True):
        assert outcome.kind is kind, status
        assert outcome.status == status
        assert outcome.reply is None and outcome.retry_after is None
        if kind is Kind.SUCCESS:
            assert (outcome.error, outcome.body) == (None, None)
        elif status in (301, 302):
            assert outcome.error == f"HTTP {status} (redirect to /elsewhere not followed)"
            assert outcome.body == f"answer {status}".encode()
        else:
            assert outcome.error == f"HTTP {status}"
            assert outcome.body == f"answer {status}".encode()
    # Redirects were not followed.
    assert [s.path for s in server.seen] == [f"/status/{status}" for status, _ in STATUSES]


def test_failure_body_keeps_the_first_kib() -> None:
    body = bytes(range(256)) * 40

    async def main() -> Outcome:
        async with Server(answer(500, body)) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert outcome.body == body[:1024]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds(status: int) -> None:
    async def main() -> Outcome:
        async with Server(answer(status, b"slow down", {"Retry-After": "120"})) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.retry_after) == (Kind.RETRIABLE, status, 120.0)


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)

    async def main() -> Outcome:
        async with Server(answer(503, b"", {"Retry-After": when})) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert outcome.retry_after is not None and 115 <= outcome.retry_after <= 120


def test_retry_after_is_ignored_on_other_statuses() -> None:
    async def main() -> Outcome:
        async with Server(answer(500, b"", {"Retry-After": "120"})) as server:
            return await post(server.url, event())

    assert asyncio.run(main()).retry_after is None


# --------------------------------------------------------------------------- faults


def test_timeout() -> None:
    server_box: list[Server] = []

    async def stall(_request: web.Request) -> web.StreamResponse:
        await server_box[0].release.wait()
        return web.Response()

    async def main() -> Outcome:
        async with Server(stall) as server:
            server_box.append(server)
            return await post(server.url, event(), delivery=Delivery(timeout=0.3))

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error) == (Kind.RETRIABLE, None, "timeout after 0.3s")
    assert 0.25 <= outcome.elapsed < 3


def test_deadline_while_reading_a_failure_body_keeps_the_status() -> None:
    server_box: list[Server] = []

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400)
        await response.prepare(request)
        await response.write(b"partial")
        await server_box[0].release.wait()
        return response

    async def main() -> Outcome:
        async with Server(trickle) as server:
            server_box.append(server)
            return await post(server.url, event(), delivery=Delivery(timeout=0.3))

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error, outcome.body) == (
        Kind.PERMANENT,
        400,
        "HTTP 400",
        b"partial",
    )
    assert outcome.elapsed < 3


def test_connection_refused() -> None:
    port = free_port()
    outcome = run(post(f"http://127.0.0.1:{port}", event()))
    assert (outcome.kind, outcome.status, outcome.error) == (
        Kind.RETRIABLE,
        None,
        f"connection refused to 127.0.0.1:{port}",
    )


def test_server_hangs_up_without_answering() -> None:
    async def main() -> Outcome:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await post(f"http://127.0.0.1:{port}", event())
        finally:
            server.close()
            await server.wait_closed()

    outcome = asyncio.run(main())
    assert outcome.kind is Kind.RETRIABLE and outcome.status is None
    assert outcome.error is not None and outcome.error.startswith("connection closed by 127.0.0.1:")


def test_invalid_url_is_permanent() -> None:
    outcome = run(post("http://exa mple.com:99999", event(), path=""))
    assert outcome.kind is Kind.PERMANENT
    assert outcome.error is not None and outcome.error.startswith("invalid URL")


def test_connections_are_kept_alive() -> None:
    async def main() -> Server:
        async with Server(answer(200, b"thanks" * 100)) as server:
            session = new_session()
            for status_path in ("/a", "/b", "/c"):
                outcome = await deliver_http(
                    server.url + status_path,
                    event(),
                    attempt=1,
                    delivery=Delivery(timeout=10.0),
                    headers={},
                    signing_secret=None,
                    session=session,
                )
                assert outcome.kind is Kind.SUCCESS
            await session.close()
        return server

    server = asyncio.run(main())
    assert len({s.peer for s in server.seen}) == 1


# --------------------------------------------------------------------------- replies


def reply_event() -> CloudEvent:
    return make_event(
        type="order.reserved",
        source="/inventory",
        id="res-1",
        subject="naïve",
        time="2024-05-01T10:00:01Z",
        data=b'{"reserved": true}',
        datacontenttype="application/json",
        extensions={"tenant": "ä"},
    )


def test_binary_reply_increments_hops() -> None:
    headers, body = to_binary(reply_event())

    async def main() -> Outcome:
        async with Server(answer(200, body, headers)) as server:
            return await post(server.url, event(**{HOPS: "3"}))

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error) == (Kind.SUCCESS, 200, None)
    assert outcome.reply is not None
    assert outcome.reply.attributes[HOPS] == 4
    assert outcome.reply.with_attributes(**{HOPS: None, "traceparent": None}) == reply_event()


def test_structured_reply_gets_hop_one() -> None:
    headers, body = to_structured(
        reply_event().with_attributes(**{HOPS: 9})
    )  # the replier's value is ignored

    async def main() -> Outcome:
        async with Server(answer(201, body, headers)) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert outcome.kind is Kind.SUCCESS and outcome.reply is not None
    assert outcome.reply.attributes[HOPS] == 1
    assert outcome.reply.data == b'{"reserved":true}'
    assert (
        outcome.reply.with_attributes(**{HOPS: None, "traceparent": None}).attributes
        == reply_event().attributes
    )


def test_reply_past_the_hop_limit_is_dropped() -> None:
    headers, body = to_binary(reply_event())

    async def main() -> list[Outcome]:
        async with Server(answer(200, body, headers)) as server:
            return [
                await post(server.url, event(**{HOPS: HOP_LIMIT - 1})),
                await post(server.url, event(**{HOPS: HOP_LIMIT})),
            ]

    last_ok, over = asyncio.run(main())
    assert last_ok.reply is not None and last_ok.reply.attributes[HOPS] == HOP_LIMIT
    assert (over.kind, over.status, over.error, over.reply) == (Kind.PERMANENT, 200, "hop limit", None)


@pytest.mark.parametrize(
    ("headers", "body", "error"),
    [
        (
            {"ce-specversion": "1.0", "ce-id": "x", "ce-type": "t"},
            b"",
            "invalid reply: missing required attribute 'source'",
        ),
        (
            {"ce-specversion": "0.3", "ce-id": "x", "ce-type": "t", "ce-source": "/s"},
            b"",
            "invalid reply: specversion must be \"1.0\", got '0.3'",
        ),
        ({"ce-id": "x", "ce-type": "t"}, b"", "invalid reply: ce- headers without ce-specversion"),
        (
            {"Content-Type": STRUCTURED_CT},
            b"{not json",
            "invalid reply: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)",
        ),
        (
            {"Content-Type": "application/cloudevents-batch+json"},
            b"[]",
            "invalid reply: a batch is not a reply (reply with one event)",
        ),
    ],
)
def test_invalid_reply_is_permanent(headers: dict[str, str], body: bytes, error: str) -> None:
    async def main() -> Outcome:
        async with Server(answer(200, body, headers)) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error, outcome.reply) == (Kind.PERMANENT, 200, error, None)


def test_plain_2xx_body_is_ignored() -> None:
    async def main() -> Outcome:
        async with Server(
            answer(200, b'{"specversion": "1.0"}', {"Content-Type": "application/json"})
        ) as server:
            return await post(server.url, event())

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.reply, outcome.body) == (Kind.SUCCESS, None, None)


def endless(status: int, headers: Mapping[str, str]) -> tuple[Handler, list[int]]:
    """A handler streaming an endless body; ``sent`` counts what it managed to write."""
    sent = [0]

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=dict(headers))
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while sent[0] < 4 << 30:
                await response.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading and hung up: that is the point
        return response

    return handler, sent


@pytest.mark.parametrize(
    ("status", "headers", "kind", "error"),
    [
        (200, {"Content-Type": STRUCTURED_CT}, Kind.PERMANENT, "invalid reply: body is over 65536 bytes"),
        (
            200,
            {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s", "ce-type": "t"},
            Kind.PERMANENT,
            "invalid reply: body is over 65536 bytes",
        ),
        (500, {}, Kind.RETRIABLE, "HTTP 500"),
        (200, {"Content-Type": "text/plain"}, Kind.SUCCESS, None),
    ],
)
def test_huge_body_is_not_read_to_the_end(
    status: int, headers: dict[str, str], kind: Kind, error: str | None
) -> None:
    handler, sent = endless(status, headers)

    async def main() -> Outcome:
        async with Server(handler) as server:
            return await post(server.url, event(), max_reply_bytes=65536)

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status, outcome.error, outcome.reply) == (kind, status, error, None)
    if kind is not Kind.SUCCESS:
        assert outcome.body == b"x" * 1024
    assert outcome.elapsed < 5
    assert sent[0] < 16 << 20  # no more than socket buffers hold before the hang-up (4 GiB offered)


# --------------------------------------------------------------------------- deliver()


def test_deliver_adds_extra_attributes() -> None:
    async def main() -> Server:
        async with Server(answer(200)) as server:
            session = new_session()
            outcome = await deliver(
                Subscriber(uri=server.url + "/dlq"),
                event(),
                route="inventory",
                broker="default",
                attempt=1,
                delivery=Delivery(timeout=10.0),
                headers={},
                signing_secret=None,
                session=session,
                extra_attributes={"knativeerrordest": "http://127.0.0.1:1/x", "knativeerrorcode": "503"},
            )
            await session.close()
            assert outcome.kind is Kind.SUCCESS
        return server

    [req] = asyncio.run(main()).seen
    assert req.headers["ce-knativeerrordest"] == "http://127.0.0.1:1/x"
    assert req.headers["ce-knativeerrorcode"] == "503"
    assert req.headers["ce-id"] == "order-1"


def test_deliver_to_an_empty_subscriber_is_permanent() -> None:
    async def main() -> Outcome:
        session = new_session()
        try:
            return await deliver(
                Subscriber(),
                event(),
                route="r",
                broker="default",
                attempt=1,
                delivery=Delivery(),
                headers={},
                signing_secret=None,
                session=session,
            )
        finally:
            await session.close()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.error) == (Kind.PERMANENT, "the subscriber has neither a uri nor a command")


# --------------------------------------------------------------------------- maxEventBytes


def big_reply(size: int) -> CloudEvent:
    return make_event(type="order.reserved", source="/inventory", id="big-1", data=b"z" * size)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_reply_over_max_event_bytes_is_an_invalid_reply(mode: str) -> None:
    reply = big_reply(5000)
    headers, body = to_binary(reply) if mode == "binary" else to_structured(reply)

    async def main() -> tuple[Outcome, Outcome]:
        async with Server(answer(200, body, headers)) as server:
            return (
                await post(server.url, event(), max_event_bytes=4096),
                await post(server.url, event(), max_event_bytes=8192),
            )

    over, under = asyncio.run(main())
    assert (over.kind, over.status, over.reply) == (Kind.PERMANENT, 200, None)
    # measured as it would be stored: the reply with its evroutehops stamp
    assert over.error is not None
    size = re.fullmatch(r"invalid reply: event is (\d+) bytes, over maxEventBytes 4096", over.error)
    assert size is not None and int(size.group(1)) > reply.size()
    assert over.body is not None and len(over.body) == 1024
    assert under.kind is Kind.SUCCESS and under.reply is not None and under.reply.data == reply.data


def test_reply_body_far_over_max_event_bytes_is_not_read_to_the_end() -> None:
    handler, sent = endless(200, {"Content-Type": STRUCTURED_CT})

    async def main() -> Outcome:
        async with Server(handler) as server:
            return await post(server.url, event(), max_event_bytes=10_000)

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.error) == (
        Kind.PERMANENT,
        "invalid reply: body is over 20000 bytes (maxEventBytes 10000)",
    )
    assert sent[0] < 16 << 20
