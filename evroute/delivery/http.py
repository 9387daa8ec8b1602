"""HTTP subscribers (SPEC 5.1): one POST per attempt over a shared aiohttp session.

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
from typing import Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

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
_RESERVED = frozenset({"content-type", "content-length", "transfer-encoding", "prefer", "evroute-attempt"})

ReadState = Literal["eof", "over", "broken", "timeout"]


def build_request(
    event: CloudEvent,
    *,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    now: float,
    trace: Mapping[str, str] | None = None,
) -> tuple[CIMultiDict[str], bytes]:
    """The headers and body of one attempt. Raises InvalidInput for an unusable signing secret.

    ``trace``: the W3C ``traceparent``/``tracestate`` headers of the attempt (see
    :func:`evroute.tracing.start_attempt`); they replace any a route's headers name.
    """
    if delivery.format == "json":
        event_headers, body = to_structured(event)
    else:
        event_headers, body = to_binary(event)
    out: CIMultiDict[str] = CIMultiDict()
    out["User-Agent"] = USER_AGENT
    out["Accept-Encoding"] = "identity"  # no compressed bodies: read limits then count real bytes
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(("ce-", "webhook-")) or low in _RESERVED:
            continue
        out[name] = value
    for name, value in event_headers.items():
        out[name] = value
    out["Prefer"] = "reply"
    out["evroute-attempt"] = str(attempt)
    if trace:
        for name, value in trace.items():
            out[name] = value
    if signing_secret is not None:
        for name, value in signing.signature_headers(signing_secret, event.id, int(now), body).items():
            out[name] = value
    return out, body


async def deliver_http(
    uri: str,
    event: CloudEvent,
    *,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    session: aiohttp.ClientSession,
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
        request_headers, body = build_request(
            event,
            attempt=attempt,
            delivery=delivery,
            headers=headers,
            signing_secret=signing_secret,
            now=clock(),
            trace=trace,
        )
    except InvalidInput as exc:
        return failure(Kind.PERMANENT, one_line(f"cannot sign the request: {exc}"), attempt_.elapsed())
    # Binary mode without datacontenttype must not gain one: aiohttp would label a bytes body
    # application/octet-stream, and the receiver would take that as the event's datacontenttype.
    skip = () if "Content-Type" in request_headers else ("Content-Type",)
    response: aiohttp.ClientResponse | None = None
    try:
        try:
            async with asyncio.timeout_at(attempt_.deadline):
                response = await session.post(
                    uri, data=body, headers=request_headers, allow_redirects=False, skip_auto_headers=skip
                )
        except TimeoutError:
            return failure(Kind.RETRIABLE, attempt_.timeout_error(), attempt_.elapsed())
        except aiohttp.InvalidURL:
            return failure(Kind.PERMANENT, one_line(f"invalid URL {uri!r}"), attempt_.elapsed())
        except aiohttp.ClientConnectorError as exc:
            return failure(Kind.RETRIABLE, _connect_error(exc), attempt_.elapsed())
        except aiohttp.ServerDisconnectedError:
            error = f"connection closed by {_where(uri)} before a response"
            return failure(Kind.RETRIABLE, one_line(error), attempt_.elapsed())
        except aiohttp.ClientResponseError as exc:
            error = f"bad response from {_where(uri)}: {exc.message}"
            return failure(Kind.RETRIABLE, one_line(error), attempt_.elapsed())
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__} talking to {_where(uri)}: {exc}"
            return failure(Kind.RETRIABLE, one_line(error), attempt_.elapsed())
        if delivery.contract == "dapr":
            return await _judge_dapr(response, attempt_)
        return await _judge(response, event, attempt_, max_reply_bytes, max_event_bytes, clock)
    finally:
        if response is not None:
            # Unread body left: aiohttp closes the connection instead of returning it to the pool.
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
    response: aiohttp.ClientResponse,
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
            await _read(response, attempt.deadline, keep=0, limit=DRAIN_BYTES)
            return success(status, attempt.elapsed())
        raw, state = await _read(response, attempt.deadline, keep=max_reply_bytes, limit=max_reply_bytes)
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
    kept, _ = await _read(response, attempt.deadline, keep=BODY_KEEP, limit=DRAIN_BYTES)
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


async def _judge_dapr(response: aiohttp.ClientResponse, attempt: _Attempt) -> Outcome:
    """Dapr's contract (a route from a Dapr Subscription): the body's status, then 404."""
    status = response.status
    kind = classify_dapr(status)
    if kind is Kind.SUCCESS:
        raw, state = await _read(response, attempt.deadline, keep=DAPR_STATUS_BYTES, limit=DAPR_STATUS_BYTES)
        if state in ("timeout", "broken"):
            return failure(Kind.RETRIABLE, f"HTTP {status}: body cut short", attempt.elapsed(), status=status)
        kind, error = dapr_answer(raw if state == "eof" else b"")
        if kind is Kind.SUCCESS:
            return success(status, attempt.elapsed())
        return failure(
            kind, error or f"HTTP {status}", attempt.elapsed(), status=status, body=raw[:BODY_KEEP]
        )
    kept, _ = await _read(response, attempt.deadline, keep=BODY_KEEP, limit=DRAIN_BYTES)
    return failure(kind, f"HTTP {status}", attempt.elapsed(), status=status, body=kept)


def _looks_like_event(response: aiohttp.ClientResponse) -> bool:
    """A CloudEvent content type or any ``ce-`` header (``ce-specversion`` among them): what
    ``http_mode`` would look at, in one pass over the (case-insensitive) response headers."""
    headers = response.headers
    base = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if base in (STRUCTURED_CT, BATCH_CT):
        return True
    return any(name[:3].lower() == "ce-" for name in headers)


async def _read(
    response: aiohttp.ClientResponse, deadline: float | None, *, keep: int, limit: int
) -> tuple[bytes, ReadState]:
    """Read at most ``limit`` bytes (+1 to notice more) before ``deadline``, keeping the first ``keep``.

    Never raises for the body: the state says how reading ended (``eof``, ``over`` the
    limit, ``broken`` connection, or ``timeout``) and the bytes kept so far come back.
    """
    if response.content.at_eof():  # no body, or all of it already read: skip the timer and the loop
        return b"", "eof"
    kept = bytearray()
    total = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                chunk = await response.content.read(min(DRAIN_BYTES, limit + 1 - total))
                if not chunk:
                    return bytes(kept), "eof"
                total += len(chunk)
                if len(kept) < keep:
                    kept += chunk[: keep - len(kept)]
                if total > limit:
                    return bytes(kept), "over"
    except TimeoutError:
        return bytes(kept), "timeout"
    except (aiohttp.ClientError, OSError):
        return bytes(kept), "broken"


def _where(uri: str) -> str:
    try:
        url = URL(uri)
    except (ValueError, TypeError):
        return uri
    return f"{url.host}:{url.port}" if url.host else uri


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    where = f"{exc.host}:{exc.port}"
    cause = exc.os_error
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused to {where}"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_error is not None and isinstance(exc, dns_error):
        return one_line(f"cannot resolve host {exc.host}: {cause.strerror or cause}")
    return one_line(f"cannot connect to {where}: {cause.strerror or cause}")


__all__ = ["DRAIN_BYTES", "MAX_REPLY_BYTES", "USER_AGENT", "build_request", "deliver_http"]
