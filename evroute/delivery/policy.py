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
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
from email.utils import parsedate_to_datetime

from evroute.cloudevent import HOPS, AttrValue, CloudEvent
from evroute.delivery.outcome import BODY_KEEP, Kind, Outcome, failure, one_line, success
from evroute.routes.model import Delivery

HOP_LIMIT = 16  # a reply whose evroutehops would exceed this is dropped (loop guard)
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


def accept_reply(
    parent: CloudEvent, reply: CloudEvent, *, status: int, elapsed: float, raw: bytes | None
) -> Outcome:
    """A success carrying ``reply`` stamped with its hop count, or a permanent ``hop limit``."""
    hops = hops_for_reply(parent)
    if hops > HOP_LIMIT:
        return failure(Kind.PERMANENT, "hop limit", elapsed, status=status, body=(raw or b"")[:BODY_KEEP])
    return success(status, elapsed, reply.with_attributes(**{HOPS: hops}))


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
    "ERROR_CODE",
    "ERROR_DATA",
    "ERROR_DEST",
    "EX_DATAERR",
    "EX_TEMPFAIL",
    "HOP_LIMIT",
    "RETRIABLE_STATUSES",
    "RETRY_AFTER_STATUSES",
    "accept_reply",
    "backoff",
    "classify_exit",
    "classify_status",
    "dls_event",
    "endpoint_unhealthy",
    "hops_for_reply",
    "invalid_reply",
    "next_wait",
    "parse_retry_after",
    "route_pause",
    "transform_failed",
    "transformed_reply",
]
