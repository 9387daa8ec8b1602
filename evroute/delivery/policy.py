"""Delivery policy: the one place that decides what an HTTP status or an exit code means,
how long a retry waits, and how replies and dead-letter forwards are stamped.

Classification (SPEC 5.1, 5.2):

==================================  ===========
HTTP 2xx, exit 0                    success
HTTP 5xx, 404, 408, 409, 429        retriable
exit 75 and every other non-zero    retriable
connection errors, timeouts         retriable   (decided by the sinks, which have no status)
HTTP 3xx and every other 4xx        permanent   (redirects are never followed)
exit 65 (EX_DATAERR)                permanent
==================================  ===========

404 and 409 are retried, as Knative does: a subscriber that is being deployed answers 404 for
a moment, and 409 is a conflict that a later attempt may not hit.

Routes read from Dapr Subscriptions (``Delivery.contract == "dapr"``) are judged as Dapr's
sidecar judges an app (dapr/dapr ``pkg/runtime/subscription/postman/http``):

==========================================  ===========================================
2xx, body empty, not JSON, or no status     success
2xx with ``{"status": "SUCCESS"}``          success
2xx with ``{"status": "RETRY"}``            retriable
2xx with ``{"status": "DROP"}``             permanent, reason ``dropped by subscriber``
2xx with any other status value             retriable (Dapr: "unknown status")
404                                         permanent (Dapr drops the message)
every other status, connection errors       retriable
==========================================  ===========================================

A Dapr app never replies with an event: its 2xx bodies are read for the status only.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from email.utils import parsedate_to_datetime

from evroute.cloudevent import HOPS, AttrValue, CloudEvent
from evroute.delivery.outcome import BODY_KEEP, Kind, Outcome, failure, one_line, success
from evroute.routes.model import Delivery

HOP_LIMIT = 16  # a reply whose evroutehops would exceed this is dropped (loop guard)
# A reply's body may take up to this many times maxEventBytes on the wire (structured JSON,
# base64 data); the event it carries must still be within maxEventBytes itself.
REPLY_READ_FACTOR = 2
RETRIABLE_STATUSES = frozenset({404, 408, 409, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
EX_DATAERR = 65
EX_TEMPFAIL = 75

# Knative's dead-letter extensions; the code is an integer attribute, as Knative sets it.
ERROR_DEST = "knativeerrordest"
ERROR_CODE = "knativeerrorcode"
ERROR_DATA = "knativeerrordata"


def classify_status(status: int) -> Kind:
    if 200 <= status <= 299:
        return Kind.SUCCESS
    if 500 <= status <= 599 or status in RETRIABLE_STATUSES:
        return Kind.RETRIABLE
    return Kind.PERMANENT


DROPPED = "dropped by subscriber"  # reason of a Dapr DROP; kept as the dead letter's reason
DAPR_STATUS_BYTES = 64 * 1024  # largest 2xx body read for Dapr's {"status": …}


def classify_dapr(status: int) -> Kind:
    """Dapr's judgement of an HTTP status (the 2xx body is judged by :func:`dapr_answer`)."""
    if 200 <= status <= 299:
        return Kind.SUCCESS
    if status == 404:
        return Kind.PERMANENT
    return Kind.RETRIABLE


def dapr_answer(body: bytes) -> tuple[Kind, str | None]:
    """What a Dapr app's 2xx body says: (kind, error). Unparseable or empty means success."""
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        return Kind.SUCCESS, None
    value = answer.get("status") if isinstance(answer, dict) else None
    if value is None or value == "" or value == "SUCCESS":
        return Kind.SUCCESS, None
    if value == "RETRY":
        return Kind.RETRIABLE, "subscriber answered RETRY"
    if value == "DROP":
        return Kind.PERMANENT, DROPPED
    return Kind.RETRIABLE, one_line(
        f"unknown status {value!r} from subscriber (allowed: SUCCESS, RETRY, DROP)"
    )


def classify_exit(code: int) -> Kind:
    if code == 0:
        return Kind.SUCCESS
    if code == EX_DATAERR:
        return Kind.PERMANENT
    return Kind.RETRIABLE


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date).

    None when absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form carries no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, when.timestamp() - now)


def backoff(delivery: Delivery, retry_number: int) -> float:
    """The wait before retry ``retry_number`` (1 = the first retry), capped at ``backoffMax``."""
    k = max(1, retry_number)
    delay = max(0.0, delivery.backoff_delay)
    if delivery.backoff_policy == "linear":
        wait = delay * k
    elif delivery.backoff_policy == "constant":  # Dapr's constant retry policy
        wait = delay
    elif delivery.backoff_multiplier != 2.0:
        # Dapr's exponential policy (×1.5); past the float range every cap applies anyway.
        try:
            wait = delay * delivery.backoff_multiplier ** min(k - 1, 1000)
        except OverflowError:
            wait = math.inf
    else:
        # 2.0 ** 1024 overflows; any exponent this large is far past every cap anyway.
        wait = delay * 2.0 ** min(k - 1, 1000)
    if math.isinf(wait) or wait > delivery.backoff_max:
        wait = delivery.backoff_max
    return max(0.0, wait)


def next_wait(delivery: Delivery, retry_number: int, outcome: Outcome) -> float:
    """Backoff, stretched to honour Retry-After on 429/503 up to ``retryAfterMax`` (0 disables)."""
    wait = backoff(delivery, retry_number)
    if (
        outcome.retry_after is not None
        and outcome.status in RETRY_AFTER_STATUSES
        and delivery.retry_after_max > 0
    ):
        wait = max(wait, min(outcome.retry_after, delivery.retry_after_max))
    return wait


def route_pause(delivery: Delivery, outcome: Outcome) -> float | None:
    """Seconds the whole route holds after ``outcome``: a 429 with ``Retry-After`` (up to
    ``retryAfterMax``; 0 disables) slows the route as a whole, not only the event that got it.
    None: the route goes on."""
    if (
        outcome.status == 429
        and outcome.retry_after is not None
        and outcome.retry_after > 0
        and delivery.retry_after_max > 0
    ):
        return min(outcome.retry_after, delivery.retry_after_max)
    return None


def endpoint_unhealthy(outcome: Outcome) -> bool:
    """Whether ``outcome`` takes its endpoint out of a consumer group for ``endpointCooldown``:
    no answer at all (refused, reset, timeout) or a 5xx. A 4xx is about the event, not the
    endpoint; a 429 slows the whole route instead (:func:`route_pause`)."""
    if outcome.kind is Kind.SUCCESS:
        return False
    if outcome.status is None:
        return outcome.kind is Kind.RETRIABLE
    return 500 <= outcome.status <= 599


def hops_for_reply(parent: CloudEvent) -> int:
    """``evroutehops`` for a reply to ``parent``: the parent's value (absent = 0) + 1.

    A value that is not a non-negative integer (a producer may set anything) counts as 0, so
    the guard can be reset by a bad value but never pushed backwards past zero.
    """
    value = parent.attributes.get(HOPS)
    hops = 0
    if isinstance(value, bool):
        hops = 0
    elif isinstance(value, int):
        hops = max(0, value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        hops = int(value.strip())
    return hops + 1


def reply_read_limit(max_event_bytes: int) -> int:
    """How much of a reply body a sink reads before it calls the reply too large."""
    return max_event_bytes * REPLY_READ_FACTOR


def accept_reply(
    parent: CloudEvent,
    reply: CloudEvent,
    *,
    status: int,
    elapsed: float,
    raw: bytes | None,
    max_event_bytes: int | None = None,
) -> Outcome:
    """A success carrying ``reply`` stamped with its hop count; a permanent ``hop limit``; or,
    for a reply over ``max_event_bytes``, a permanent ``invalid reply`` (it cannot be stored,
    and a success would lose it without a trace)."""
    hops = hops_for_reply(parent)
    if hops > HOP_LIMIT:
        return failure(Kind.PERMANENT, "hop limit", elapsed, status=status, body=(raw or b"")[:BODY_KEEP])
    stamped = reply.with_attributes(**{HOPS: hops})
    if max_event_bytes is not None:
        size = stamped.size()
        if size > max_event_bytes:
            why = f"event is {size} bytes, over maxEventBytes {max_event_bytes}"
            return invalid_reply(why, status=status, elapsed=elapsed, raw=raw)
    return success(status, elapsed, stamped)


def oversized_reply(
    what: str, cap: int, max_event_bytes: int | None, *, status: int, elapsed: float, raw: bytes | None
) -> Outcome:
    """A reply whose body (``what``: "body", "stdout") went past ``cap`` bytes: permanent."""
    limit = f" (maxEventBytes {max_event_bytes})" if max_event_bytes is not None else ""
    return invalid_reply(f"{what} is over {cap} bytes{limit}", status=status, elapsed=elapsed, raw=raw)


def invalid_reply(reason: str, *, status: int, elapsed: float, raw: bytes | None) -> Outcome:
    return failure(
        Kind.PERMANENT,
        one_line(f"invalid reply: {reason}"),
        elapsed,
        status=status,
        body=(raw or b"")[:BODY_KEEP],
    )


def transform_failed(reason: str, elapsed: float) -> Outcome:
    """A transform that cannot make a valid CloudEvent of this event (``reason`` names it):
    permanent, since the same event fails the same way on every retry."""
    return failure(Kind.PERMANENT, one_line(reason), elapsed)


def transformed_reply(parent: CloudEvent, reply: CloudEvent, elapsed: float) -> Outcome:
    """An EventTransform without a sink: its result goes back to the broker as a reply, with
    the reply's hop count (or a permanent ``hop limit``). No subscriber was called: no status."""
    hops = hops_for_reply(parent)
    if hops > HOP_LIMIT:
        return failure(Kind.PERMANENT, "hop limit", elapsed)
    return Outcome(Kind.SUCCESS, None, None, None, reply.with_attributes(**{HOPS: hops}), None, elapsed)


def dead_letter_copy(event: CloudEvent, route: str, topic: str) -> CloudEvent | None:
    """The event as published to a Dapr ``deadLetterTopic``: ``topic`` is the dead-letter topic,
    so subscriptions on it receive it. Its id derives from the original and the route, since a
    broker stores one event per (source, id) and redoing a dead letter must not double it.

    The copy counts as a hop (``evroutehops`` + 1, as a reply does): dead-letter topics whose
    subscribers fail into each other's topics stop at the hop limit (None: not published)."""
    hops = hops_for_reply(event)
    if hops > HOP_LIMIT:
        return None
    return event.with_attributes(id=f"{event.id}.deadletter.{route}", topic=topic, **{HOPS: hops})


def dls_event(event: CloudEvent, dest: str, status: int | None, body: bytes | None) -> CloudEvent:
    """The event as sent to a ``deadLetterSink``, with Knative's error extensions (SPEC 5.4):
    the failed subscriber, the final status (500 when there was no response), and the base64
    of at most the first 1024 bytes of the response body (omitted when there was none)."""
    data = body[:BODY_KEEP] if body else None
    changes: dict[str, AttrValue | None] = {
        ERROR_DEST: dest,
        ERROR_CODE: status if status is not None else 500,
        ERROR_DATA: base64.b64encode(data).decode("ascii") if data else None,
    }
    return event.with_attributes(**changes)


__all__ = [
    "DAPR_STATUS_BYTES",
    "DROPPED",
    "ERROR_CODE",
    "ERROR_DATA",
    "ERROR_DEST",
    "EX_DATAERR",
    "EX_TEMPFAIL",
    "HOP_LIMIT",
    "REPLY_READ_FACTOR",
    "RETRIABLE_STATUSES",
    "RETRY_AFTER_STATUSES",
    "accept_reply",
    "backoff",
    "classify_dapr",
    "classify_exit",
    "classify_status",
    "dapr_answer",
    "dead_letter_copy",
    "dls_event",
    "endpoint_unhealthy",
    "hops_for_reply",
    "invalid_reply",
    "next_wait",
    "oversized_reply",
    "parse_retry_after",
    "reply_read_limit",
    "route_pause",
    "transform_failed",
    "transformed_reply",
]
