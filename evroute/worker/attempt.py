"""Sending: one delivery attempt to a route's subscriber, and forwarding a dead letter to the
route's deadLetterSink with Knative's error extensions. Nothing here writes to the store
except the sink's outcome on the dead-letter row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evroute.cloudevent import CloudEvent
from evroute.delivery import deliver
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import dls_event, next_wait
from evroute.errors import StoreError
from evroute.routes.model import Route, Subscriber
from evroute.store.base import Deliveries

if TYPE_CHECKING:
    from evroute.worker.runtime import RouteRuntime
    from evroute.worker.settle import Decision, Settler

logger = logging.getLogger("evroute.worker")


async def attempt(
    route: Route,
    event: CloudEvent,
    n: int,
    session: Any,
    max_event_bytes: int | None = None,
    target: Subscriber | None = None,
) -> Outcome:
    """Attempt ``n`` of delivering ``event`` to ``route``'s subscriber (through the route's
    transform, if any), or to ``target``, the endpoint of a consumer group chosen for it. A
    reply over ``max_event_bytes`` is an invalid reply."""
    sink = route.subscriber if target is None else target
    outcome: Outcome = await deliver(
        sink,
        event,
        route=route.name,
        broker=route.broker,
        attempt=n,
        delivery=route.delivery,
        headers=route.headers,
        signing_secret=route.signing_secret,
        session=session,
        transform=route.transform,
        max_event_bytes=max_event_bytes,
    )
    if route.subscriber.uris and sink.uri is not None:
        # Which instance of the group took it: recorded with the attempt, and in its error.
        error = f"{outcome.error} at {sink.uri}" if outcome.error else None
        outcome = replace(outcome, endpoint=sink.uri, error=error)
    return outcome


async def try_event(
    settler: Settler,
    rt: RouteRuntime,
    event: CloudEvent,
    seq: int,
    n: int,
    session: Any,
    *,
    first_failed_at: float | None,
    dlq_id: int | None = None,
    ordered: bool = False,
    scheduled: bool = False,
    token: Any = None,
) -> Decision:
    """Attempt ``n`` of ``event`` (seq ``seq``) on ``rt``'s route — to its consumer group's next
    endpoint, if it has one — and what the settler decides of the outcome (not yet stored)."""
    started = settler.clock()
    outcome = await attempt(rt.route, event, n, session, settler.max_event_bytes(), rt.flow.target(started))
    return settler.decide(
        rt,
        event,
        seq,
        outcome,
        attempt=n,
        started=started,
        first_failed_at=first_failed_at,
        dlq_id=dlq_id,
        ordered=ordered,
        scheduled=scheduled,
        token=token,
    )


async def forward(
    store: Deliveries,
    route: Route,
    dlq_id: int,
    event: CloudEvent,
    failed: Outcome,
    session: Any,
    stopping: Callable[[], bool],
) -> None:
    """Send the dead letter to the route's deadLetterSink with Knative's error extensions."""
    sink = route.delivery.dead_letter_sink
    assert sink is not None
    forwarded = dls_event(event, route.mask(route.subscriber.describe()), failed.status, failed.body)
    policy = route.delivery
    result = "failed"
    for n in range(1, policy.retry + 2):
        outcome = await deliver(
            sink,
            forwarded,
            route=route.name,
            broker=route.broker,
            attempt=n,
            delivery=policy,
            headers={},
            signing_secret=None,
            session=session,
            dead_letter_sink=True,
        )
        if outcome.kind is Kind.SUCCESS:
            result = f"delivered to {route.mask(sink.describe())}"
            break
        result = f"failed after {n} attempt{'s' if n > 1 else ''}: {route.mask(outcome.error or '?')}"
        if outcome.kind is Kind.PERMANENT or n > policy.retry or stopping():
            break
        await asyncio.sleep(next_wait(policy, n, outcome))
    try:
        await store.dls_outcome(dlq_id, result)
    except StoreError as exc:
        logger.warning("route %s: cannot record dead-letter-sink outcome: %s", route.name, exc)
    if not result.startswith("delivered"):
        logger.warning(
            "route %s: dead letter %d not forwarded: %s (kept in the database)", route.name, dlq_id, result
        )
