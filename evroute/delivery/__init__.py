"""Delivery: hand one event to one subscriber once, and say what came of it.

:func:`deliver` is the only entry point the worker needs. It never raises for a delivery
fault: refused connections, timeouts, bad replies, programs that will not start all come back
as an :class:`~evroute.delivery.outcome.Outcome` whose ``kind`` was decided by
:mod:`evroute.delivery.policy`. What to do next (retry, dead-letter, publish a reply) is the
worker's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from evroute import tracing
from evroute.cloudevent import CloudEvent
from evroute.delivery.command import deliver_command
from evroute.delivery.http import MAX_REPLY_BYTES, deliver_http
from evroute.delivery.http1 import HttpClient
from evroute.delivery.outcome import Kind, Outcome, failure, one_line
from evroute.delivery.policy import reply_read_limit
from evroute.routes.model import Delivery, Subscriber
from evroute.transform import Transform

logger = logging.getLogger("evroute.delivery")

KEEPALIVE_SECONDS = 30.0


async def deliver(
    target: Subscriber,
    event: CloudEvent,
    *,
    route: str,
    broker: str,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    session: HttpClient,
    extra_attributes: Mapping[str, str] | None = None,
    transform: Transform | None = None,
    max_event_bytes: int | None = None,
    dead_letter_sink: bool = False,
) -> Outcome:
    """One attempt to deliver ``event`` to ``target`` (an HTTP URI or a command).

    ``extra_attributes`` are set on the event as sent (the dead-letter sink's
    ``knativeerror*`` extensions, for instance); ``headers`` and ``signing_secret`` apply to
    HTTP subscribers only. A reply event over ``max_event_bytes`` (``settings.maxEventBytes``)
    is an invalid reply, a permanent failure: it could not be stored. ``transform`` reshapes the event before it is encoded (see
    :mod:`evroute.delivery.transformed`).

    The attempt carries the event's trace context (its own span's, when spans are exported:
    ``dead_letter_sink`` names it) and a reply joins that trace.
    """
    if transform is not None:
        from evroute.delivery.transformed import deliver_transformed

        return await deliver_transformed(
            transform,
            target,
            event,
            route=route,
            broker=broker,
            attempt=attempt,
            delivery=delivery,
            headers=headers,
            signing_secret=signing_secret,
            session=session,
            max_event_bytes=max_event_bytes,
        )
    hop = tracing.start_attempt(
        event, route=route, broker=broker, attempt=attempt, dead_letter_sink=dead_letter_sink
    )
    outcome = await _deliver(
        target,
        event,
        route=route,
        broker=broker,
        attempt=attempt,
        delivery=delivery,
        headers=headers,
        signing_secret=signing_secret,
        session=session,
        extra_attributes=extra_attributes,
        max_event_bytes=max_event_bytes,
        trace=hop.headers,
    )
    return tracing.finish_attempt(hop, outcome)


async def _deliver(
    target: Subscriber,
    event: CloudEvent,
    *,
    route: str,
    broker: str,
    attempt: int,
    delivery: Delivery,
    headers: Mapping[str, str],
    signing_secret: str | None,
    session: HttpClient,
    extra_attributes: Mapping[str, str] | None,
    max_event_bytes: int | None,
    trace: Mapping[str, str],
) -> Outcome:
    read = MAX_REPLY_BYTES if max_event_bytes is None else reply_read_limit(max_event_bytes)
    started = asyncio.get_running_loop().time()
    try:
        if extra_attributes:
            event = event.with_attributes(**dict(extra_attributes))
        if target.rules:  # a Dapr Subscription: the first rule that matches picks the path
            chosen = target.for_event(event)
            if chosen is None:
                return failure(Kind.PERMANENT, "no matching rule", 0.0)
            target = chosen
        if target.uri is not None:
            return await deliver_http(
                target.uri,
                event,
                attempt=attempt,
                delivery=delivery,
                headers=headers,
                signing_secret=signing_secret,
                session=session,
                max_reply_bytes=read,
                max_event_bytes=max_event_bytes,
                trace=trace,
            )
        if target.command:
            return await deliver_command(
                target,
                event,
                route=route,
                broker=broker,
                attempt=attempt,
                timeout=delivery.timeout,
                max_reply_bytes=read,
                max_event_bytes=max_event_bytes,
                trace=trace,
            )
        return failure(Kind.PERMANENT, "the subscriber has neither a uri nor a command", 0.0)
    except Exception as exc:
        # A fault in evroute itself, not in the subscriber. Retrying is safe (at-least-once)
        # and keeps the event; the traceback goes to the log so it can be fixed.
        logger.exception("route %s: unexpected error delivering %s", route, event.id)
        elapsed = asyncio.get_running_loop().time() - started
        return failure(Kind.RETRIABLE, one_line(f"internal error: {type(exc).__name__}: {exc}"), elapsed)


def new_session() -> HttpClient:
    """The worker's one HTTP client; call it inside the running event loop.

    Keep-alive connections are pooled per host and dropped after 30 s idle; each route's
    ``concurrency`` bounds what it has in flight. Cookies are never stored (a webhook delivery
    carries no state from the previous one), proxies from the environment are not used
    (subscribers are local), and the per-attempt timeout comes from each route's delivery
    policy. See :mod:`evroute.delivery.http1`.
    """
    return HttpClient(KEEPALIVE_SECONDS)


__all__ = ["Kind", "Outcome", "deliver", "new_session"]
