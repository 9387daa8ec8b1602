"""Delivery through a transform: reshape the event, then deliver it (or reply with it).

- The transform runs before the event is encoded; a result that is not a valid CloudEvent
  (or an evaluation error) is a permanent failure naming the transform
  (:func:`~evroute.delivery.policy.transform_failed`): the subscriber is never called.
- A reply-only transform (a Knative EventTransform without ``spec.sink``) calls nobody: the
  transformed event is the attempt's reply, published back into the broker with its hop count.
- With a sink, the sink's own reply passes through the transform's reply rule (Knative's
  ``spec.reply``: reshaped by JSONata, or discarded) before the broker gets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

from evroute.cloudevent import CloudEvent
from evroute.delivery.http1 import HttpClient
from evroute.delivery.outcome import Outcome
from evroute.delivery.policy import transform_failed, transformed_reply
from evroute.routes.model import Delivery, Subscriber
from evroute.transform import Transform, TransformFailed


async def deliver_transformed(
    transform: Transform,
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
    max_event_bytes: int | None = None,
) -> Outcome:
    from evroute.delivery import deliver

    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        shaped = transform.apply(event)
    except TransformFailed as exc:
        return transform_failed(exc.reason, loop.time() - started)
    if transform.reply:
        return transformed_reply(event, shaped, loop.time() - started)
    outcome = await deliver(
        target,
        shaped,
        route=route,
        broker=broker,
        attempt=attempt,
        delivery=delivery,
        headers=headers,
        signing_secret=signing_secret,
        session=session,
        max_event_bytes=max_event_bytes,
    )
    if outcome.reply is None:
        return outcome
    try:
        return replace(outcome, reply=transform.apply_to_reply(outcome.reply))
    except TransformFailed as exc:
        return transform_failed(exc.reason, outcome.elapsed)
