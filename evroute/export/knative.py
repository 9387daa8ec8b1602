"""Routes as Knative Eventing manifests: one ``Broker`` per broker, one ``Trigger`` per route,
and an ``EventTransform`` (``v1alpha1``, JSONata) for a route with a transform, its Trigger's
subscriber then being a ref to it.

The Trigger is the route as SPEC 3.2 reads it, so exporting and loading back gives the same route
(names, broker, filters, retry policy). Only delivery fields the v1 Trigger CRD knows are written:
``retry``, ``backoffPolicy``, ``backoffDelay``, ``deadLetterSink``, ``format``, plus ``timeout``
(the CRD keeps unknown delivery fields for exactly this feature, on by default since it went beta).
``retryAfterMax`` is left out: Knative's webhook rejects it unless the alpha ``delivery-retryafter``
feature is enabled. See docs/export.md for every mapping and every choice.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from evroute.durations import format_duration
from evroute.export import (
    brokers_in_order,
    chosen,
    largest_backoff,
    masked,
    one_endpoint,
    plain,
    rate_text,
    service_for,
)
from evroute.routes.model import PingSource, Route, RouteSet

API_VERSION = "eventing.knative.dev/v1"
TRANSFORM_API_VERSION = "eventing.knative.dev/v1alpha1"
ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"


def to_knative(
    routeset: RouteSet, namespace: str | None = None, *, service_refs: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Broker and Trigger manifests for ``routeset``, and what Knative cannot express.

    ``service_refs``: where a URI came from the ``services:`` map, write
    ``subscriber.ref`` (a ``v1`` ``Service`` of that name) instead of the local URI, which is what
    a cluster needs; by default the resolved URI is written as is.
    """
    own = [r for r in routeset.routes if r.pingsource is None]  # not the routes made for a PingSource
    brokers = brokers_in_order(replace(routeset, routes=tuple(own)))
    brokers += [s.broker for s in routeset.sources if s.broker is not None and s.broker not in brokers]
    manifests: list[dict[str, Any]] = [_broker(name, namespace) for name in brokers]
    notes: list[str] = []
    written: set[str] = set()  # EventTransforms already written (several Triggers may share one)
    for source in routeset.sources:
        manifests.append(pingsource(source, routeset.services if service_refs else {}, namespace))
    for written_route in own:
        services = routeset.services if service_refs else {}
        _flow_notes(written_route, notes)
        route = one_endpoint(written_route)
        trigger = _trigger(route, services, namespace, notes)
        if trigger is None:
            continue
        if route.transform is not None:
            transform = eventtransform(route, services, namespace)
            name = transform["metadata"]["name"]
            trigger["spec"]["subscriber"] = {
                "ref": {"apiVersion": TRANSFORM_API_VERSION, "kind": "EventTransform", "name": name}
            }
            if name not in written:
                written.add(name)
                manifests.append(transform)
        manifests.append(trigger)
    return manifests, notes


def eventtransform(route: Route, services: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    """The ``EventTransform`` a route's transform is in Knative: its JSONata expression, the
    route's subscriber as ``spec.sink`` (none for a transform that replies into the broker)
    and its reply rule. A route's own ``transform`` takes the route's name."""
    t = route.transform
    assert t is not None
    spec: dict[str, Any] = {"jsonata": {"expression": t.expression}}
    if not t.reply and route.subscriber.uri is not None:
        spec["sink"] = _destination(route.subscriber.uri, services)
        if t.discard_reply:
            spec["reply"] = {"discard": True}
        elif t.reply_expression is not None:
            spec["reply"] = {"jsonata": {"expression": t.reply_expression}}
    doc = {
        "apiVersion": TRANSFORM_API_VERSION,
        "kind": "EventTransform",
        "metadata": _metadata(t.name or route.name, namespace),
        "spec": spec,
    }
    result: dict[str, Any] = masked(doc, route)
    return result


def pingsource(source: PingSource, services: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    """The ``sources.knative.dev/v1`` PingSource as it was read. The namespace is the export's
    ``--namespace`` when given, else the document's own."""
    spec: dict[str, Any] = {"schedule": source.schedule}
    if source.timezone:
        spec["timezone"] = source.timezone
    if source.content_type:
        spec["contentType"] = source.content_type
    if source.data is not None:
        if source.base64:
            spec["dataBase64"] = base64.b64encode(source.data).decode("ascii")
        else:
            spec["data"] = source.data.decode("utf-8")
    if source.broker is not None:
        spec["sink"] = {"ref": {"apiVersion": API_VERSION, "kind": "Broker", "name": source.broker}}
    elif source.uri is not None:
        spec["sink"] = _destination(source.uri, services)
    if source.extensions:
        spec["ceOverrides"] = {"extensions": dict(source.extensions)}
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": _metadata(source.name, namespace or source.namespace),
        "spec": spec,
    }


def _broker(name: str, namespace: str | None) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Broker", "metadata": _metadata(name, namespace)}


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _note(route: Route, what: str, why: str) -> str:
    return route.mask(f"route '{route.name}': {what} cannot be expressed in Knative ({why})")


def _destination(uri: str, services: Mapping[str, str]) -> dict[str, Any]:
    """A Knative Destination: a ``Service`` ref (plus the relative rest) when ``uri`` came from
    ``services`` and refs were asked for, else the absolute URI."""
    hit = service_for(uri, services) if services else None
    if hit is None:
        return {"uri": uri}
    name, rest = hit
    dest: dict[str, Any] = {"ref": {"apiVersion": "v1", "kind": "Service", "name": name}}
    if rest:
        dest["uri"] = rest
    return dest


def _trigger(
    route: Route, services: Mapping[str, str], namespace: str | None, notes: list[str]
) -> dict[str, Any] | None:
    replies = route.transform is not None and route.transform.reply
    if route.subscriber.uri is None and not replies:
        # A Trigger without an addressable subscriber is rejected by Knative; writing a
        # placeholder would deploy something that silently loses events, so the Trigger is left out.
        notes.append(
            _note(
                route,
                "a command subscriber",
                "a Trigger delivers over HTTP only; the Trigger is left out: serve the handler over "
                "HTTP, e.g. as a Knative Service, and set subscriber.uri",
            )
        )
        return None
    d = route.delivery
    meta = _metadata(route.name, namespace)
    if d.ordered:
        meta["annotations"] = {ORDER_ANNOTATION: "ordered"}
    spec: dict[str, Any] = {"broker": route.broker}
    if route.filter:
        spec["filter"] = {"attributes": plain(route.filter)}
    if route.filters:
        spec["filters"] = plain(list(route.filters))
    if route.subscriber.uri is not None:
        spec["subscriber"] = _destination(route.subscriber.uri, services)
    spec["delivery"] = _delivery(route, services, notes)
    _notes_for(route, notes)
    trigger = {"apiVersion": API_VERSION, "kind": "Trigger", "metadata": meta, "spec": spec}
    result: dict[str, Any] = masked(trigger, route)
    return result


def _delivery(route: Route, services: Mapping[str, str], notes: list[str]) -> dict[str, Any]:
    d = route.delivery
    delivery: dict[str, Any] = {
        "retry": d.retry,
        "backoffPolicy": d.backoff_policy,
        "backoffDelay": format_duration(d.backoff_delay),
        "timeout": format_duration(d.timeout),
    }
    dls = d.dead_letter_sink
    if dls is not None and dls.uri is not None:
        delivery["deadLetterSink"] = _destination(dls.uri, services)
    elif dls is not None:
        notes.append(
            _note(
                route,
                "a command deadLetterSink",
                "a dead-letter sink must be addressable over HTTP; the Trigger is exported without "
                "one, so Knative drops events that exhaust their retries: serve the handler over HTTP "
                "and set deadLetterSink.uri",
            )
        )
    if d.format == "json":
        delivery["format"] = "json"
    return delivery


def _flow_notes(route: Route, notes: list[str]) -> None:
    """Competing consumers and rate limits: a Trigger has neither."""
    uris = route.subscriber.uris
    if len(uris) > 1:
        notes.append(
            _note(
                route,
                f"subscriber.uris ({len(uris)} endpoints)",
                f"a Trigger has one subscriber; exported with the first ({uris[0]}): put the "
                "instances behind one Kubernetes Service (or a Knative Service with several "
                "replicas) and point the Trigger at it",
            )
        )
    if route.delivery.rate_limit is not None:
        notes.append(
            _note(
                route,
                rate_text(route),
                "a Trigger delivers as fast as the subscriber answers; limit the rate in the "
                "subscriber, or with the Kafka broker's consumer settings",
            )
        )


def _notes_for(route: Route, notes: list[str]) -> None:
    """Every setting of an exported route that its Trigger does not carry."""
    d = route.delivery
    if route.paused:
        notes.append(
            _note(
                route,
                "paused: true",
                "a Trigger cannot be paused; it is exported and will deliver: leave it out until "
                "the route is resumed",
            )
        )
    if route.start == "earliest":
        notes.append(
            _note(
                route,
                "start: earliest",
                "a new Trigger sees only events sent after it is ready; publish the history again "
                "to replay it",
            )
        )
    if d.ordered:
        notes.append(
            _note(
                route,
                "ordering: ordered",
                "only the Kafka broker class honours it: exported as the annotation "
                f"{ORDER_ANNOTATION}: ordered; give broker '{route.broker}' the annotation "
                "eventing.knative.dev/broker.class: Kafka",
            )
        )
    elif chosen("concurrency", d.concurrency):
        notes.append(
            _note(
                route,
                f"concurrency: {d.concurrency}",
                "a Trigger has no limit on deliveries in flight; the broker's dispatcher sets it "
                "for the whole cluster",
            )
        )
    if largest_backoff(route) > d.backoff_max:
        notes.append(
            _note(
                route,
                f"backoffMax: {format_duration(d.backoff_max)}",
                "the v1 Trigger's delivery has no cap on one wait, so the last retry waits "
                f"{format_duration(largest_backoff(route))}; lower retry or backoffDelay, or use "
                "backoffMax where the cluster enables the delivery-backoff-max feature",
            )
        )
    if d.retry_after_max > 0 and chosen("retryAfterMax", d.retry_after_max):
        notes.append(
            _note(
                route,
                f"retryAfterMax: {format_duration(d.retry_after_max)}",
                "the field is rejected unless the cluster enables the alpha delivery-retryafter "
                "feature; with it enabled, add retryAfterMax to spec.delivery",
            )
        )
    if d.circuit_breaker is not None:
        notes.append(
            _note(
                route,
                "circuitBreaker",
                "Knative has no circuit breaker; failing events follow the retry policy and then "
                "go to the dead-letter sink",
            )
        )
    if route.headers:
        notes.append(
            _note(
                route,
                f"headers ({', '.join(sorted(route.headers))})",
                "a Trigger sends no per-trigger request headers; add them in a proxy in front of "
                "the subscriber, or use Knative's OIDC sender authentication for credentials",
            )
        )
    if route.signing_secret is not None:
        notes.append(
            _note(
                route,
                "signing",
                "Knative does not sign deliveries with Standard Webhooks signatures; use its OIDC "
                "sender authentication instead",
            )
        )
