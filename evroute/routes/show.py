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
    return {"uri": route.mask(sink.uri or "")}


def route_dict(route: Route) -> dict[str, Any]:
    """The route in routes.yaml vocabulary, every delivery field resolved, secrets masked."""
    d = route.delivery
    breaker = d.circuit_breaker
    return {
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
        },
        "headers": {k: "***" for k in route.headers},
        "signing": None if route.signing_secret is None else {"secret": "***"},
        "start": route.start,
        "paused": route.paused,
        "env": None if route.env is None else list(route.env),
    }


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
        route.mask(route.subscriber.describe()),
        retry,
        ordering,
        "yes" if route.paused else "",
    ]
