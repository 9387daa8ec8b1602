"""Routes as people and scripts read them: table rows and routes.yaml-shaped dicts.

Everything here is masked: expanded ``${VAR}`` values, signing secrets and every header value
(written in the file or expanded: either may be a credential) print as ``***``.
"""

from __future__ import annotations

from typing import Any

from evroute.durations import format_duration
from evroute.routes.model import Route, Subscriber

HEADERS = ("name", "broker", "filter", "subscriber", "retry", "ordering", "paused")


def sink_dict(sink: Subscriber | None, route: Route) -> dict[str, Any] | None:
    if sink is None:
        return None
    if sink.command is not None:
        return {"command": [route.mask(a) for a in sink.command]}
    if sink.uris:
        return {"uris": [route.mask(u) for u in sink.uris]}
    if sink.rules:  # a Dapr Subscription's path rules (match None: the default)
        return {
            "uri": route.mask(sink.uri or ""),
            "rules": [{"match": r.source or None, "path": r.path} for r in sink.rules],
        }
    return {"uri": route.mask(sink.uri or "")}


def subscriber_text(route: Route) -> str:
    """Where a route delivers, masked; a transform says so (``EventTransform x -> URI``)."""
    text = route.mask(route.subscriber.describe())
    t = route.transform
    if t is None:
        return text
    via = f"EventTransform {t.name}" if t.name else "transform"
    return f"{via} -> reply into {route.broker}" if t.reply else f"{via} -> {text}"


def route_dict(route: Route) -> dict[str, Any]:
    """The route in routes.yaml vocabulary, every delivery field resolved, secrets masked."""
    d = route.delivery
    breaker = d.circuit_breaker
    limit = d.rate_limit
    out = {
        "name": route.name,
        "broker": route.broker,
        "filter": dict(route.filter),
        "filters": list(route.filters),
        "subscriber": sink_dict(route.subscriber, route),
        "delivery": {
            "retry": d.retry,
            "backoffPolicy": d.backoff_policy,
            "backoffDelay": format_duration(d.backoff_delay),
            "backoffMax": format_duration(d.backoff_max),
            "timeout": format_duration(d.timeout),
            "retryAfterMax": format_duration(d.retry_after_max),
            "deadLetterSink": sink_dict(d.dead_letter_sink, route),
            "format": d.format,
            "ordering": d.ordering,
            "concurrency": d.concurrency,
            "circuitBreaker": None
            if breaker is None
            else {
                "consecutiveFailures": breaker.consecutive_failures,
                "cooldown": format_duration(breaker.cooldown),
            },
            "rateLimit": None
            if limit is None
            else {"rate": limit.rate, "per": format_duration(limit.per), "burst": limit.burst},
            "endpointCooldown": format_duration(d.endpoint_cooldown),
        },
        "headers": {k: "***" for k in route.headers},
        "signing": None if route.signing_secret is None else {"secret": "***"},
        "start": route.start,
        "paused": route.paused,
        **({} if route.transform is None else {"transform": _transform_dict(route)}),
        "env": None if route.env is None else list(route.env),
    }
    if route.dead_letter_topic is not None:
        out["deadLetterTopic"] = route.dead_letter_topic
    return out


def _transform_dict(route: Route) -> dict[str, Any]:
    t = route.transform
    assert t is not None
    out: dict[str, Any] = {"jsonata": t.expression}
    if t.name:
        out["eventTransform"] = t.name
    if t.reply:
        out["replyIntoBroker"] = True
    if t.reply_expression is not None:
        out["replyJsonata"] = t.reply_expression
    if t.discard_reply:
        out["discardReply"] = True
    return out


def route_row(route: Route) -> list[str]:
    """One table row: name, broker, filter, subscriber, retry policy, ordering, paused."""
    d = route.delivery
    retry = f"{d.retry} {d.backoff_policy} {format_duration(d.backoff_delay)}"
    if d.dead_letter_sink is not None:
        retry += " +dls"
    ordering = "ordered" if d.ordered else f"unordered/{d.concurrency}"
    return [
        route.name,
        route.broker,
        route.matcher.description,
        subscriber_text(route),
        retry,
        ordering,
        "yes" if route.paused else "",
    ]
