"""HTTP subscribers (SPEC 5.1): one POST per attempt over the worker's keep-alive connections
(:mod:`evroute.delivery.http1`).

The request is the event in binary content mode (``ce-*`` headers, body = data) or, with
``format: json``, structured mode; plus ``Prefer: reply``, ``evroute-attempt: N``, the route's
headers and, with a signing secret, the Standard Webhooks headers. The route's headers cannot
replace the ones that carry the event or its signature.

What the response means is decided by :mod:`evroute.delivery.policy`. Choices made here:

- Redirects are not followed: a 3xx is permanent, and its error names the ``Location``.
- ``delivery.timeout`` bounds the whole attempt: connecting, sending, waiting and reading.
  A deadline that passes while the body of a failure (or of a plain 2xx) is being read keeps
  the status: the answer was already given, only the body is cut short.
- Bodies are read with a limit. A failure keeps the first 1 KiB; a reply may be up to
  ``max_reply_bytes``; anything longer is not read to the end (the connection is dropped
  rather than drained, so a subscriber cannot make evroute buffer or download without end).
- A 2xx that looks like a CloudEvent (a structured or batch content type, or any ``ce-``
  header) is a reply. If it does not validate, the attempt is a **permanent** failure
  ``invalid reply: <reason>`` rather than a quiet success: the subscriber meant to publish
  something and it would otherwise be lost without a trace. A batch, a body larger than
  ``max_reply_bytes``, or a reply event larger than ``max_event_bytes`` is invalid in the same way.
- Any other 2xx body is ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from evroute import __version__
from evroute.cloudevent import (
    BATCH_CT,
    STRUCTURED_CT,
    CloudEvent,
    from_http,
    http_mode,
    to_binary,
    to_structured,
)
from evroute.delivery import signing
from evroute.delivery.http1 import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    HttpClient,
    InvalidURL,
    ReadState,
    Response,
)
from evroute.delivery.outcome import BODY_KEEP, Kind, Outcome, failure, one_line, seconds, success
from evroute.delivery.policy import (
    DAPR_STATUS_BYTES,
    RETRY_AFTER_STATUSES,
    accept_reply,
    classify_dapr,
    classify_status,
    dapr_answer,
    invalid_reply,
    oversized_reply,
    parse_retry_after,
)
from evroute.errors import InvalidEvent, InvalidInput
from evroute.routes.model import Delivery

MAX_REPLY_BYTES = 1 << 20  # largest reply body read (SPEC default maxEventBytes)
DRAIN_BYTES = 64 * 1024  # read this much of an unwanted body so the connection can be reused
USER_AGENT = f"evroute/{__version__}"

# Headers that carry the event, its framing or its signature: a route's headers cannot replace them.
_RESERVED = frozenset(
    {"content-type", "content-length", "transfer-encoding", "prefer", "evroute-attempt", "host", "connection"}
)
_TRACE = frozenset({"traceparent", "tracestate"})
_DEFAULTS = {
    "user-agent": ("User-Agent", USER_AGENT),
    "accept": ("Accept", "*/*"),
    # No compressed bodies: read limits then count real bytes.
    "accept-encoding": ("Accept-Encoding", "identity"),
}


class _RouteLines:
    """A route's own header lines (defaults it may replace, then its headers), built once."""

    __slots__ = ("count", "headers", "text", "trace")

    def __init__(self, headers: Mapping[str, str]) -> None:
        chosen = dict(_DEFAULTS)
        trace: list[str] = []
        for name, value in headers.items():
            low = name.lower()
            if low.startswith(("ce-", "webhook-")) or low in _RESERVED:
                continue
            if low in _TRACE:  # the attempt's own trace context replaces these when it has one
                trace.append(f"{name}: {value}\r\n")
                continue
            chosen[low] = (name, value)
        self.headers = headers  # held: its id() stays this mapping's while it is cached
        self.text = "".join(f"{name}: {value}\r\n" for name, value in chosen.values())
        self.count = len(chosen)
        self.trace = "".join(trace)


_route_lines: dict[int, _RouteLines] = {}


def _lines_for(headers: Mapping[str, str]) -> _RouteLines:
    """The route's header lines, cached by the identity of its (unchanging) headers mapping."""
    found = _route_lines.get(id(headers))
    if found is not None and found.headers is headers:
        return found
    found = _RouteLines(headers)
    if len(_route_lines) >= 256:  # per-attempt mappings (a dead-letter sink's) must not pile up
        _route_lines.clear()
    _route_lines[id(headers)] = found
    return found


def build_request(
    event: CloudEvent,
    *,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    now: float,
    trace: Mapping[str, str] | None = None,
) -> tuple[bytes, bytes]:
    """The header lines (after the request line and ``Host``, without ``Content-Length``) and
    the body of one attempt. Raises InvalidInput for an unusable signing secret or a header
    value with a line break in it.

    ``trace``: the W3C ``traceparent``/``tracestate`` headers of the attempt (see
    :func:`evroute.tracing.start_attempt`); they replace any a route's headers name.
    """
    if delivery.format == "json":
        event_headers, body = to_structured(event)
    else:
        event_headers, body = to_binary(event)
    route = _lines_for(headers)
    parts = [route.text]
    lines = route.count + len(event_headers) + 2
    for name, value in event_headers.items():
        parts.append(f"{name}: {value}\r\n")
    parts.append(f"Prefer: reply\r\nevroute-attempt: {attempt}\r\n")
    if trace:
        for name, value in trace.items():
            parts.append(f"{name}: {value}\r\n")
        lines += len(trace)
    elif route.trace:
        parts.append(route.trace)
        lines += route.trace.count("\n")
    if signing_secret is not None:
        try:
            signature = signing.signature_headers(signing_secret, event.id, int(now), body)
        except InvalidInput as exc:
            raise InvalidInput(f"cannot sign the request: {exc}") from None
        for name, value in signature.items():
            parts.append(f"{name}: {value}\r\n")
        lines += len(signature)
    text = "".join(parts)
    # One line per header: a value carrying CR or LF would start a header of its own.
    if text.count("\n") != lines or text.count("\r") != lines:
        raise InvalidInput("cannot send the request: a header value contains a line break")
    return text.encode("utf-8", "surrogateescape"), body


async def deliver_http(
    uri: str,
    event: CloudEvent,
    *,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    session: HttpClient,
    max_reply_bytes: int = MAX_REPLY_BYTES,
    max_event_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
    trace: Mapping[str, str] | None = None,
) -> Outcome:
    """POST ``event`` to ``uri`` once and say what came of it; never raises for delivery faults.

    A reply body is read up to ``max_reply_bytes``; a reply event over ``max_event_bytes``
    (the routes file's ``settings.maxEventBytes``) is an invalid reply."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    limit = delivery.timeout if delivery.timeout > 0 else None
    attempt_ = _Attempt(started, None if limit is None else started + limit, limit)
    try:
        head, body = build_request(
            event,
            attempt=attempt,
            delivery=delivery,
            headers=headers,
            signing_secret=signing_secret,
            now=clock(),
            trace=trace,
        )
    except InvalidInput as exc:
        return failure(Kind.PERMANENT, one_line(str(exc)), attempt_.elapsed())
    try:
        response = await session.post(uri, head, body, attempt_.deadline)
    except TimeoutError:
        return failure(Kind.RETRIABLE, attempt_.timeout_error(), attempt_.elapsed())
    except InvalidURL as exc:
        return failure(Kind.PERMANENT, one_line(str(exc)), attempt_.elapsed())
    except (ConnectFailed, Disconnected, BadResponse) as exc:
        return failure(Kind.RETRIABLE, one_line(str(exc)), attempt_.elapsed())
    except OSError as exc:
        error = f"{type(exc).__name__} talking to {uri}: {exc}"
        return failure(Kind.RETRIABLE, one_line(error), attempt_.elapsed())
    try:
        if delivery.contract == "dapr":
            return await _judge_dapr(response, attempt_)
        return await _judge(response, event, attempt_, max_reply_bytes, max_event_bytes, clock)
    finally:
        # An answer not read to the end closes its connection instead of going back to the pool.
        response.release()


class _Attempt:
    __slots__ = ("deadline", "limit", "started")

    def __init__(self, started: float, deadline: float | None, limit: float | None) -> None:
        self.started = started
        self.deadline = deadline
        self.limit = limit

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def timeout_error(self) -> str:
        return f"timeout after {seconds(self.limit)}" if self.limit is not None else "timeout"


async def _judge(
    response: Response,
    parent: CloudEvent,
    attempt: _Attempt,
    max_reply_bytes: int,
    max_event_bytes: int | None,
    clock: Callable[[], float],
) -> Outcome:
    status = response.status
    kind = classify_status(status)
    if kind is Kind.SUCCESS:
        if not _looks_like_event(response):
            await _read(response, keep=0, limit=DRAIN_BYTES)
            return success(status, attempt.elapsed())
        raw, state = await _read(response, keep=max_reply_bytes, limit=max_reply_bytes)
        if state == "over":
            return oversized_reply(
                "body", max_reply_bytes, max_event_bytes, status=status, elapsed=attempt.elapsed(), raw=raw
            )
        if state == "timeout":
            return failure(
                Kind.RETRIABLE, attempt.timeout_error(), attempt.elapsed(), status=status, body=raw
            )
        if state == "broken":
            # The subscriber said yes but its reply did not arrive whole: try again.
            error = f"HTTP {status}: reply body cut short"
            return failure(Kind.RETRIABLE, error, attempt.elapsed(), status=status, body=raw[:BODY_KEEP])
        mode = http_mode(response.headers)
        if mode is None:
            return invalid_reply(
                "ce- headers without ce-specversion", status=status, elapsed=attempt.elapsed(), raw=raw
            )
        if mode == "batch":
            return invalid_reply(
                "a batch is not a reply (reply with one event)",
                status=status,
                elapsed=attempt.elapsed(),
                raw=raw,
            )
        try:
            [reply] = from_http(response.headers, raw)
        except InvalidEvent as exc:
            return invalid_reply(str(exc), status=status, elapsed=attempt.elapsed(), raw=raw)
        return accept_reply(
            parent, reply, status=status, elapsed=attempt.elapsed(), raw=raw, max_event_bytes=max_event_bytes
        )
    kept, _ = await _read(response, keep=BODY_KEEP, limit=DRAIN_BYTES)
    error = f"HTTP {status}"
    if 300 <= status <= 399:
        location = response.headers.get("Location")
        error += f" (redirect to {location} not followed)" if location else " (redirects are not followed)"
    retry_after = None
    if status in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), clock())
    return failure(
        kind, one_line(error), attempt.elapsed(), status=status, body=kept, retry_after=retry_after
    )


async def _judge_dapr(response: Response, attempt: _Attempt) -> Outcome:
    """Dapr's contract (a route from a Dapr Subscription): the body's status, then 404."""
    status = response.status
    kind = classify_dapr(status)
    if kind is Kind.SUCCESS:
        raw, state = await _read(response, keep=DAPR_STATUS_BYTES, limit=DAPR_STATUS_BYTES)
        if state in ("timeout", "broken"):
            return failure(Kind.RETRIABLE, f"HTTP {status}: body cut short", attempt.elapsed(), status=status)
        kind, error = dapr_answer(raw if state == "eof" else b"")
        if kind is Kind.SUCCESS:
            return success(status, attempt.elapsed())
        return failure(
            kind, error or f"HTTP {status}", attempt.elapsed(), status=status, body=raw[:BODY_KEEP]
        )
    kept, _ = await _read(response, keep=BODY_KEEP, limit=DRAIN_BYTES)
    return failure(kind, f"HTTP {status}", attempt.elapsed(), status=status, body=kept)


def _looks_like_event(response: Response) -> bool:
    """A CloudEvent content type or any ``ce-`` header (``ce-specversion`` among them): what
    ``http_mode`` would look at, in one pass over the (case-insensitive) response headers."""
    headers = response.headers
    base = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if base in (STRUCTURED_CT, BATCH_CT):
        return True
    return any(name[:3].lower() == "ce-" for name in headers)


async def _read(response: Response, *, keep: int, limit: int) -> tuple[bytes, ReadState]:
    """Read at most ``limit`` bytes (+1 to notice more) before the attempt's deadline (the
    connection's timer), keeping the first ``keep``; never raises for the body (see
    :meth:`evroute.delivery.http1.Response.read`)."""
    if response.at_eof:  # no body, or all of it already read
        return b"", "eof"
    return await response.read(keep=keep, limit=limit)


__all__ = ["DRAIN_BYTES", "MAX_REPLY_BYTES", "USER_AGENT", "build_request", "deliver_http"]
