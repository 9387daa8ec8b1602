"""The CloudEvents HTTP ingress of ``evroute worker --listen``: an aiohttp application.

::

    POST /            publish to broker ``default``
    POST /<broker>    publish to <broker> (names ^[a-z0-9][a-z0-9-]{0,62}$; anything else is 404)
    POST /v1.0/publish/<pubsubname>/<topic>
                      Dapr's publish API (:mod:`evroute.dapr_api`): the body is wrapped into a
                      CloudEvent as Dapr does, stored in broker <pubsubname>; 204 once stored
                      (with a token, Dapr's ``dapr-api-token`` header is accepted as well)
    GET  /healthz     200 {"status": "ok"} while the database is writable, 503 otherwise
    GET  /metrics     Prometheus text exposition of the worker's metrics

A POST carries one event in binary mode (``ce-*`` headers) or structured mode
(``application/cloudevents+json``), or a batch (``application/cloudevents-batch+json``,
all or nothing). The answer is ``202 {"stored": n, "duplicates": m}`` once the events are
committed to SQLite; a duplicate ``(broker, source, id)`` is accepted and stored once.

Status codes, so a producer can tell its own mistakes from ours:

- ``400 {"error": …}``: not a CloudEvents request, or an invalid event (the message names the
  attribute or header). Anything unexpected while parsing is also a 400: bad input never
  gets a 5xx.
- ``413``: too large. Limits, all derived from ``settings.maxEventBytes`` (L):
  a binary-mode body (it is the event's data) over L; a structured-mode body over 2 × L (the
  JSON envelope and base64 make the text longer than the event, so the body limit is loose and
  the event itself is then measured exactly against L); a batch body over 100 × L, and any
  event of a batch over L. Content-Length is checked before reading and the body is read with
  the cap, so an oversized request never sits in memory.
- ``401``: a token is set (``--token`` / ``$EVROUTE_TOKEN``) and the request lacks
  ``Authorization: Bearer <token>``. Every path needs it except ``/healthz`` (for load
  balancers and probes); ``/metrics`` needs it too, as it names the routes.
- ``404`` for other paths (``/healthz`` and ``/metrics`` are not brokers), ``405`` with
  ``Allow`` for other methods.
- ``503 {"error": …}`` when the database cannot take the write (locked, disk full), and with
  ``Retry-After: 1`` when the request's body does not fit in the budget of bytes being read at
  once (64 × maxEventBytes, see :mod:`evroute.worker.inflight`).
- ``408`` when a request body sends nothing for 30 s (its share of that budget is returned).

The common request (one binary-mode event with a Content-Length body) never reaches aiohttp's
request machinery: :mod:`evroute.worker.fastingress` parses and answers it on the connection,
with the same checks and answers, and hands anything else to this application.

The handler writes through the worker's own SQLite connection, in the event loop: every
request that arrives in the same turn of the loop shares one short transaction
(:mod:`evroute.worker.groupcommit`; about 0.05 ms for a COMMIT in WAL mode here). A writer
thread with a connection of its own was measured and is slower: it cost the process 127 µs
of CPU per request against 108 µs on the loop (thread hand-overs, the interpreter lock
passed back and forth around every SQLite call), for no more requests a second on two
shared cores.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from evroute import tracing
from evroute.cloudevent import (
    BATCH_CT,
    STRUCTURED_CT,
    CloudEvent,
    check_size,
    from_http,
    http_mode,
)
from evroute.errors import EventTooLarge, EvrouteError, InvalidEvent, InvalidInput, RuntimeFault
from evroute.store import Store
from evroute.store.base import Deliveries
from evroute.worker.fastparse import binary_event
from evroute.worker.groupcommit import GroupCommit, deliveries
from evroute.worker.inflight import BODY_IDLE_SECONDS, INFLIGHT_FACTOR, RETRY_AFTER_SECONDS, Budget, Ticket
from evroute.worker.metrics import Metrics

logger = logging.getLogger("evroute.ingress")

DEFAULT_HOST = "127.0.0.1"
BROKER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
STRUCTURED_FACTOR = 2  # a structured body may be up to 2 × maxEventBytes; the event itself ≤ 1 ×
BATCH_FACTOR = 100  # a batch body may be up to 100 × maxEventBytes, each event ≤ 1 ×
_READ_ONLY = "GET, HEAD"
DAPR_PUBLISH = "/v1.0/publish/"


_JSON = {"Content-Type": "application/json; charset=utf-8"}
_ACCEPTED = {
    (1, 0): json.dumps({"stored": 1, "duplicates": 0}).encode(),
    (0, 1): json.dumps({"stored": 0, "duplicates": 1}).encode(),
}


def _accepted(stored: int, duplicates: int) -> web.Response:
    """202 with the counts; the one-event answers' bodies are built once."""
    body = (
        _ACCEPTED.get((stored, duplicates))
        or json.dumps({"stored": stored, "duplicates": duplicates}).encode()
    )
    return web.Response(body=body, status=202, headers=_JSON)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _dapr_error(status: int, code: str, message: str) -> web.Response:
    """An error in Dapr's shape (``errorCode``, ``message``) plus evroute's ``error``."""
    return web.json_response({"errorCode": code, "message": message, "error": message}, status=status)


class Ingress:
    """The request handlers; one per application."""

    def __init__(
        self,
        store: Deliveries | Store,
        max_event_bytes: int,
        token: str | None,
        metrics: Metrics,
        on_stored: Callable[[str], None],
        max_inflight_bytes: int | None = None,
        body_idle_timeout: float = BODY_IDLE_SECONDS,
    ) -> None:
        self.store = deliveries(store)
        self.max_event_bytes = max_event_bytes
        self.budget = Budget(max_inflight_bytes or max_event_bytes * INFLIGHT_FACTOR)
        self.body_idle_timeout = body_idle_timeout
        self._token = token.encode("utf-8") if token else None
        self.metrics = metrics
        self.committer = GroupCommit(self.store, metrics, on_stored)
        self.connections: set[Any] = set()  # connections served by the fast path (fastingress)
        self.stopping = False

    @property
    def token_required(self) -> bool:
        return self._token is not None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        method = request.method
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return _error(405, f"method {method} is not allowed on /healthz", {"Allow": _READ_ONLY})
            return self.health()
        if self._token is not None and not self.authorized(request.headers, path):
            return _error(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the worker's token",
                {"WWW-Authenticate": 'Bearer realm="evroute"'},
            )
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                return _error(405, f"method {method} is not allowed on /metrics", {"Allow": _READ_ONLY})
            body, content_type = self.metrics.render()
            return web.Response(body=body, headers={"Content-Type": content_type})
        if path.startswith(DAPR_PUBLISH):
            if method != "POST":
                return _error(
                    405, f"method {method} is not allowed on {path}: publish with POST", {"Allow": "POST"}
                )
            return await self.publish_dapr(request)
        broker = "default" if path == "/" else path[1:]
        if not BROKER_NAME.match(broker):
            return _error(
                404,
                f"no such path {path!r}: publish to / (broker 'default') or /<broker> with a broker name "
                "of lower-case letters, digits and '-' (at most 63, not starting with '-')",
            )
        if method != "POST":
            return _error(
                405, f"method {method} is not allowed on {path}: publish with POST", {"Allow": "POST"}
            )
        span = tracing.ingress_started(request.headers, broker)
        response = await self.publish(request, broker, span)
        tracing.ingress_finished(span, response.status)
        return response

    def authorized(self, headers: Mapping[str, str], path: str) -> bool:
        """The request carries the worker's token (False when none is set)."""
        if self._token is None:
            return False
        dapr_token = headers.get("dapr-api-token")
        if dapr_token is not None and path.startswith(DAPR_PUBLISH):
            # A Dapr app authenticates to its sidecar with Dapr's API token header.
            return hmac.compare_digest(dapr_token.strip().encode("utf-8", "surrogateescape"), self._token)
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # compare_digest: the time taken does not tell how much of a guess was right.
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token)

    def health(self) -> web.Response:
        problem = self.store.problem()
        if problem is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unavailable", "error": problem}, status=503)

    # ------------------------------------------------------------------ publishing

    def _body_limit(self, mode: str) -> int:
        if mode == "batch":
            return self.max_event_bytes * BATCH_FACTOR
        if mode == "structured":
            return self.max_event_bytes * STRUCTURED_FACTOR
        return self.max_event_bytes

    async def publish(self, request: web.Request, broker: str, span: object = None) -> web.Response:
        headers = request.headers
        mode = http_mode(headers)
        if mode is None:
            return _error(
                400,
                "not a CloudEvent: use binary mode (ce-specversion, ce-id, ce-source, ce-type headers), "
                f"Content-Type {STRUCTURED_CT} or {BATCH_CT}",
            )
        body = await self.read_body(request, mode, self._body_limit(mode))
        if isinstance(body, web.Response):
            return body
        try:
            fast = binary_event(headers, body) if mode == "binary" else None
            events = [fast] if fast is not None else parse(headers, body)
            for i, event in enumerate(events):
                check_size(event, self.max_event_bytes, f"event {i}: " if mode == "batch" else "")
        except EventTooLarge as exc:
            return _error(413, exc.message)
        except InvalidInput as exc:
            return _error(400, exc.message)
        except Exception as exc:  # never a 5xx for bad input, whatever the parser tripped on
            logger.debug("unparseable request", exc_info=True)
            return _error(400, f"cannot parse the request as a CloudEvent ({type(exc).__name__}: {exc})")
        if not events:
            return web.json_response({"stored": 0, "duplicates": 0}, status=202)
        events = tracing.from_request(headers, events, broker, span)  # each event in a trace
        try:
            stored, duplicates = await self.committer.submit(broker, events)
        except Exception as exc:
            return _error(503, self.not_stored(exc, len(events), broker))
        return _accepted(stored, duplicates)

    async def read_body(self, request: web.Request, mode: str, limit: int) -> bytes | web.Response:
        """The request's whole body, or the answer that refuses it: 413 over ``limit``, 503 when
        it does not fit in the in-flight budget, 408 when it goes silent, 400 when unreadable.
        The body holds its share of the budget while it is being read."""
        length = request.content_length
        if length is not None and length > limit:
            return self._too_large(mode, limit)
        ticket = self.budget.ticket()
        try:
            if length is not None and not ticket.take(length):
                return self._busy()
            body = await _read_capped(
                request, limit, None if length is not None else ticket, self.body_idle_timeout
            )
        except _Busy:
            return self._busy()
        except _Stalled:
            return _error(408, self.silent_body(), {"Connection": "close"})
        except Exception as exc:  # a broken chunked or compressed body, a client gone: not our fault
            return _error(400, f"cannot read the request body: {exc or type(exc).__name__}")
        finally:
            ticket.release()
        return self._too_large(mode, limit) if body is None else body

    def silent_body(self) -> str:
        """The 408's message for a body that sent nothing for the idle timeout."""
        return f"the request body sent nothing for {self.body_idle_timeout:g}s; nothing was stored"

    def not_stored(self, exc: BaseException, n: int, broker: str) -> str:
        """Log a store fault for ``n`` events of ``broker`` once; the 503's message for it."""
        if isinstance(exc, EvrouteError | OSError):  # the store reports its faults as StoreError
            logger.error("ingress: cannot store %d event(s) in broker %s: %s", n, broker, exc)
            return f"cannot store the events now, nothing was stored: {exc}"
        logger.error("ingress: storing %d event(s) in broker %s failed", n, broker, exc_info=exc)
        return f"cannot store the events now, nothing was stored: {type(exc).__name__}: {exc}"

    async def publish_dapr(self, request: web.Request) -> web.Response:
        """Dapr's ``POST /v1.0/publish/<pubsubname>/<topic>``: 204 once stored, as Dapr answers."""
        from evroute.dapr_api import envelope, metadata_from_query

        pubsub, _, topic = request.path[len(DAPR_PUBLISH) :].partition("/")
        if not BROKER_NAME.match(pubsub) or not topic:
            return _dapr_error(
                404 if not BROKER_NAME.match(pubsub) else 400,
                "ERR_PUBSUB_NOT_FOUND" if not BROKER_NAME.match(pubsub) else "ERR_TOPIC_NAME_EMPTY",
                f"publish to /v1.0/publish/<pubsubname>/<topic>: pubsubname {pubsub!r} must be a broker "
                "name (lower-case letters, digits and '-') and the topic must not be empty",
            )
        body = await self.read_body(request, "structured", self.max_event_bytes * STRUCTURED_FACTOR)
        if isinstance(body, web.Response):
            return body
        try:
            event = envelope(
                body,
                content_type=request.headers.get("Content-Type"),
                topic=topic,
                pubsubname=pubsub,
                metadata=metadata_from_query(request.query),
                # a malformed W3C header is ignored, as at the CloudEvents endpoints
                traceparent=_valid_traceparent(request.headers.get("traceparent")),
            )
            [event] = tracing.from_request(request.headers, [event], pubsub)
            check_size(event, self.max_event_bytes)
        except EventTooLarge as exc:
            return _error(413, exc.message)
        except InvalidInput as exc:
            return _dapr_error(400, "ERR_PUBSUB_CLOUD_EVENTS_SER", exc.message)
        try:
            await self.committer.submit(pubsub, [event])
        except Exception as exc:
            logger.error("ingress: cannot store an event in broker %s: %s", pubsub, exc)
            return _dapr_error(503, "ERR_PUBSUB_PUBLISH_MESSAGE", f"cannot store the event now: {exc}")
        return web.Response(status=204)

    def _busy(self) -> web.Response:
        budget = self.budget
        return _error(
            503,
            f"the ingress is reading {budget.used} bytes of requests at once (cap {budget.cap}); "
            f"nothing was stored, retry after {RETRY_AFTER_SECONDS}s",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def _too_large(self, mode: str, limit: int) -> web.Response:
        what = {"batch": "batch", "structured": "structured-mode"}.get(mode, "binary-mode")
        return _error(
            413,
            f"{what} request body is over {limit} bytes (maxEventBytes is {self.max_event_bytes}"
            + (f", a batch may be {BATCH_FACTOR} times that" if mode == "batch" else "")
            + ")",
        )


INGRESS = web.AppKey("evroute_ingress", Ingress)


class _Busy(Exception):
    """The body being read no longer fits in the in-flight budget."""


class _Stalled(Exception):
    """The body sent nothing for the idle timeout."""


def _valid_traceparent(header: str | None) -> str | None:
    return header if header is not None and tracing.parse(header) is not None else None


async def _read_capped(
    request: web.Request, limit: int, ticket: Ticket | None = None, idle: float | None = None
) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes (chunked or compressed bodies
    have no trustworthy Content-Length, so the count is kept while reading). With ``ticket``
    each chunk takes its bytes from the in-flight budget first (:class:`_Busy` if it cannot);
    with ``idle``, a body that sends nothing for that many seconds raises :class:`_Stalled`."""
    content = request.content
    if content.is_eof():
        # The whole body came in with the headers (the common case for one event): take it
        # as it is, without a timer per read.
        body = content.read_nowait()
        if ticket is not None and not ticket.take(len(body)):
            raise _Busy
        return body if len(body) <= limit else None
    buf = bytearray()
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await request.content.readany()
        except TimeoutError:
            raise _Stalled from None
        if not chunk:
            return bytes(buf)
        if ticket is not None and not ticket.take(len(chunk)):
            raise _Busy
        buf += chunk
        if len(buf) > limit:
            return None


def parse(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Decode a request into validated events; InvalidEvent names the problem."""
    for key, value in headers.items():
        # The HTTP parser keeps undecodable header bytes as surrogates; name them here rather than
        # let them surface as an encoding error deep in percent-decoding.
        if key[:3].lower() == "ce-":
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent(f"header '{key.lower()}' is not valid UTF-8") from None
    return from_http(headers, body)


def make_app(
    *,
    store: Deliveries | Store,
    max_event_bytes: int,
    token: str | None,
    metrics: Metrics,
    on_stored: Callable[[str], None],
    max_inflight_bytes: int | None = None,
    body_idle_timeout: float = BODY_IDLE_SECONDS,
    mount: Callable[[web.Application], object] | None = None,
) -> web.Application:
    """The ingress application; ``on_stored(broker)`` runs after every append that stored events.

    ``max_inflight_bytes`` caps the request bytes read at once (default 64 × maxEventBytes); a
    body that sends nothing for ``body_idle_timeout`` seconds is answered 408. ``mount`` adds
    other routes (the console's /ui/) before the ingress's catch-all."""
    ingress = Ingress(
        store, max_event_bytes, token, metrics, on_stored, max_inflight_bytes, body_idle_timeout
    )
    app = web.Application(client_max_size=max_event_bytes * BATCH_FACTOR)
    if mount is not None:
        mount(app)
    # One catch-all route: paths and methods are decided in ``handle`` so that every refusal
    # (401, 404, 405) carries the same JSON error body.
    app.router.add_route("*", "/{path:.*}", ingress.handle)
    app[INGRESS] = ingress
    return app


class _ClientFaults(logging.LoggerAdapter):
    """What aiohttp's request handler logs through. Malformed HTTP (a bad header, a broken
    chunk, a TLS handshake on a plain port) is the client's fault and already answered with a
    400: it gets one line at INFO, not an ERROR with a traceback per request that anyone who
    can reach the port could use to fill the log. Faults of evroute's own keep the traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            text = str(getattr(exc, "message", "") or exc).strip().splitlines()
            reason = text[0].strip().rstrip(":") if text else type(exc).__name__
            self.logger.info("ingress: %s: %s", str(msg) % args, reason[:200])
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


class _Site(web.TCPSite):
    """The ingress's port: each connection starts with the fast path for the common request
    (:mod:`evroute.worker.fastingress`) and is handed to aiohttp for anything else."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, ingress: Ingress) -> None:
        super().__init__(runner, host, port)
        self._ingress = ingress
        self._app = runner.app

    async def start(self) -> None:
        from evroute.worker.fastingress import FastIngress

        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        ingress = self._ingress
        app = self._app
        # Paths another part of the application answers (the console's) are never brokers.
        reserved = frozenset(
            {"/healthz", "/metrics"} | {r.canonical for r in app.router.resources() if "{" not in r.canonical}
        )
        self._server = await asyncio.get_running_loop().create_server(
            lambda: FastIngress(ingress, server, reserved),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    async def stop(self) -> None:
        self._ingress.stopping = True
        for connection in list(self._ingress.connections):
            connection.close()
        await super().stop()


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Bind and serve ``app``; RuntimeFault names the address when the port cannot be taken."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5.0,
        logger=_ClientFaults(logger, {}),
    )
    await runner.setup()
    ingress = app.get(INGRESS)
    site = web.TCPSite(runner, host, port) if ingress is None else _Site(runner, host, port, ingress)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise RuntimeFault(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return runner


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6."""
    raw = text.strip()
    host = ""
    port_text = raw
    if raw.startswith("["):
        end = raw.find("]")
        if end > 1 and raw[end + 1 : end + 2] == ":":
            host, port_text = raw[1:end], raw[end + 2 :]
        else:
            port_text = ""
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
        if ":" in host:
            port_text = ""  # a bare IPv6 address is ambiguous: it needs brackets
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535) or any(
        c.isspace() for c in host
    ):
        raise InvalidInput(
            f"--listen {text!r} is not valid: use HOST:PORT, :PORT or PORT with a port from 1 to 65535 "
            "(e.g. 127.0.0.1:8080 or :8080; [::1]:8080 for IPv6)"
        )
    return host or DEFAULT_HOST, int(port_text)


__all__ = [
    "BROKER_NAME",
    "DEFAULT_HOST",
    "INGRESS",
    "GroupCommit",
    "Ingress",
    "make_app",
    "parse",
    "parse_listen",
    "start",
]
