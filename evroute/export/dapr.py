"""Routes as Dapr manifests: a ``dapr.io/v2alpha1`` ``Subscription`` per route and one
``dapr.io/v1alpha1`` ``Resiliency`` holding every route's retry, timeout and circuit breaker policy.

A broker becomes a topic of one pub/sub component; a route's filter becomes the CEL ``match`` of a
routing rule (a ``cel`` filter is written as it is); its subscriber URI becomes the rule's path, and the app that serves it (found through
``services:``) the Subscription's ``scopes``. A dead-letter sink becomes a ``<route>-dlq`` topic
plus a Subscription that delivers that topic to the sink. A route read from a Dapr Subscription
is written back as that Subscription (pubsub, topic, rules, default, deadLetterTopic). See
docs/export.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evroute.export import chosen, masked, one_endpoint, plain, rate_text, service_for, url_path
from evroute.routes.model import RETRY_FOREVER, Route, RouteSet, Subscriber

SUBSCRIPTION_API = "dapr.io/v2alpha1"
RESILIENCY_API = "dapr.io/v1alpha1"

# Always present on a CloudEvent, so CEL can read them without a has() guard.
_REQUIRED = frozenset({"id", "source", "type", "specversion"})
# CEL reserved words cannot follow a dot; such attributes are read as event["name"].
_CEL_RESERVED = frozenset(
    {"as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in"}
    | {"let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while"}
)


class _Untranslatable(Exception):
    """A filter part CEL cannot say (CESQL)."""


def to_dapr(
    routeset: RouteSet, namespace: str | None = None, *, pubsub: str = "pubsub"
) -> tuple[list[dict[str, Any]], list[str]]:
    """Subscriptions and one Resiliency for ``routeset``, and what Dapr cannot express."""
    subscriptions: list[dict[str, Any]] = []
    notes: list[str] = []
    exported: list[Route] = []
    for source in routeset.sources:
        notes.append(
            f"pingsource '{source.name}': a PingSource cannot be expressed in Dapr (no Subscription "
            f"publishes on a schedule; a cron input binding with schedule '{source.schedule}' can "
            "call an app that publishes the event)"
        )
    for written_route in routeset.routes:
        if written_route.pingsource is not None:
            continue  # the route that delivers a PingSource's ticks: part of the source
        _flow_notes(written_route, notes)
        route = one_endpoint(written_route)
        if route.subscriber.uri is None:
            notes.append(
                _note(
                    route,
                    "a command subscriber",
                    "Dapr delivers to an app over HTTP or gRPC; the Subscription is left out: serve "
                    "the handler as a Dapr app and subscribe it",
                )
            )
            continue
        exported.append(route)
        subscriptions.extend(_subscriptions(route, routeset.services, namespace, pubsub, notes))
        _notes_for(route, notes)
    manifests = subscriptions
    if exported:
        apps = {r.name: _app(r, routeset.services) for r in exported}
        manifests.append(_resiliency(exported, apps, namespace, pubsub, notes))
    return manifests, notes


def _note(route: Route, what: str, why: str) -> str:
    return route.mask(f"route '{route.name}': {what} cannot be expressed in Dapr ({why})")


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _app(route: Route, services: Mapping[str, str]) -> str | None:
    hit = service_for(route.subscriber.uri or "", services)
    return None if hit is None else hit[0]


def _target(
    route: Route, sink: Subscriber, services: Mapping[str, str], what: str, notes: list[str]
) -> tuple[str, str | None]:
    """(path, app id) for an HTTP sink: a Subscription names only a path of the app it is scoped to."""
    assert sink.uri is not None
    hit = service_for(sink.uri, services)
    if hit is not None:
        name, rest = hit
        return "/" + rest, name
    notes.append(
        _note(
            route,
            f"the {what} host",
            "a Subscription names only a path, delivered to the Dapr app it is scoped to; add "
            "scopes: [<app-id>] for the app that serves it, or name it in services:",
        )
    )
    return url_path(sink.uri), None


def _subscription(
    name: str, topic: str, routes: dict[str, Any], app: str | None, namespace: str | None, pubsub: str
) -> dict[str, Any]:
    spec: dict[str, Any] = {"pubsubname": pubsub, "topic": topic, "routes": routes}
    doc: dict[str, Any] = {
        "apiVersion": SUBSCRIPTION_API,
        "kind": "Subscription",
        "metadata": _metadata(name, namespace),
        "spec": spec,
    }
    if app is not None:
        doc["scopes"] = [app]
    return doc


def _from_dapr(route: Route, services: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    """A route read from a Dapr Subscription, written back as one: its CEL rules and paths,
    default, topic, pubsub and dead-letter topic as they were."""
    rules = [{"match": r.source, "path": r.path} for r in route.subscriber.rules if r.match is not None]
    routes: dict[str, Any] = {"rules": rules} if rules else {}
    last = route.subscriber.rules[-1]
    if last.match is None:
        routes["default"] = last.path
    doc = _subscription(
        route.name, route.filter["topic"], routes, _app(route, services), namespace, route.broker
    )
    if route.dead_letter_topic is not None:
        doc["spec"]["deadLetterTopic"] = route.dead_letter_topic
    return masked(doc, route)


def _subscriptions(
    route: Route, services: Mapping[str, str], namespace: str | None, pubsub: str, notes: list[str]
) -> list[dict[str, Any]]:
    if route.subscriber.rules:
        return [_from_dapr(route, services, namespace)]
    path, app = _target(route, route.subscriber, services, "subscriber", notes)
    match, left_out = filter_to_cel(route.filter, route.filters)
    for part in left_out:
        notes.append(
            _note(
                route,
                part,
                "Dapr matches with CEL; the Subscription leaves this part out, so the app receives "
                "a superset and must check it itself",
            )
        )
    routes: dict[str, Any] = {"rules": [{"match": match, "path": path}]} if match else {"default": path}
    main = _subscription(route.name, route.broker, routes, app, namespace, pubsub)
    docs = [main]
    dls = route.delivery.dead_letter_sink
    if dls is not None:
        dlq = f"{route.name}-dlq"
        main["spec"]["deadLetterTopic"] = dlq
        if dls.uri is not None:
            dls_path, dls_app = _target(route, dls, services, "deadLetterSink", notes)
            docs.append(_subscription(dlq, dlq, {"default": dls_path}, dls_app, namespace, pubsub))
        else:
            notes.append(
                _note(
                    route,
                    "a command deadLetterSink",
                    f"failed events go to the topic '{dlq}', but nothing subscribes to it: serve the "
                    "handler as a Dapr app and subscribe it to that topic",
                )
            )
    return [masked(doc, route) for doc in docs]


def _flow_notes(route: Route, notes: list[str]) -> None:
    """Competing consumers and rate limits: what a Subscription does not carry."""
    uris = route.subscriber.uris
    if len(uris) > 1:
        notes.append(
            _note(
                route,
                f"subscriber.uris ({len(uris)} endpoints)",
                f"a Subscription delivers to one app id; exported with the first ({uris[0]}): run "
                "the instances as replicas of one Dapr app, which share its consumer group",
            )
        )
    if route.delivery.rate_limit is not None:
        notes.append(
            _note(
                route,
                rate_text(route),
                "a Subscription has no rate limit; Dapr's middleware.http.ratelimit component "
                "(maxRequestsPerSecond) limits a whole app's inbound requests",
            )
        )


def _notes_for(route: Route, notes: list[str]) -> None:
    """Every setting of an exported route that its Subscription and policies do not carry."""
    d = route.delivery

    def add(what: str, why: str) -> None:
        notes.append(_note(route, what, why))

    if route.transform is not None:
        add(
            "a JSONata transform",
            "Dapr delivers events as they were published; the app receives them untransformed "
            "and must reshape them itself",
        )
    if route.paused:
        add("paused: true", "a Subscription cannot be paused; it is exported and will deliver")
    if route.start == "earliest":
        add(
            "start: earliest",
            "where a new subscription starts is a setting of the pub/sub component, e.g. "
            "initialOffset: oldest for Kafka",
        )
    if d.ordered:
        add(
            "ordering: ordered",
            "a Subscription has no ordered mode; order depends on the pub/sub component, e.g. one "
            "Kafka partition with --app-max-concurrency 1",
        )
    elif chosen("concurrency", d.concurrency):
        add(
            f"concurrency: {d.concurrency}",
            "Dapr limits deliveries in flight per app with --app-max-concurrency, not per subscription",
        )
    if d.retry > 1 and d.backoff_policy == "linear":
        add(
            "backoffPolicy: linear",
            "Dapr retries are constant or exponential; exported as exponential with maxInterval = backoffMax",
        )
    elif d.retry > 1 and d.backoff_policy != "constant" and chosen("backoffDelay", d.backoff_delay):
        add(
            f"backoffDelay: {go_duration(d.backoff_delay)}",
            "Dapr's exponential policy starts at its own 500ms and grows ×1.5 with jitter; only "
            "maxInterval = backoffMax carries over",
        )
    if d.retry_after_max > 0 and chosen("retryAfterMax", d.retry_after_max):
        add(f"retryAfterMax: {go_duration(d.retry_after_max)}", "Dapr retries do not honour Retry-After")
    if route.headers:
        add(
            f"headers ({', '.join(sorted(route.headers))})",
            "the sidecar sends no per-subscription request headers; for credentials use Dapr's app "
            "API token, APP_API_TOKEN",
        )
    if route.signing_secret is not None:
        add(
            "signing",
            "Dapr does not sign deliveries with Standard Webhooks signatures; protect the app with "
            "Dapr's app API token",
        )


# --- Resiliency ---------------------------------------------------------------------------------


def _policies(route: Route) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """(retry policy, timeout, circuit breaker) in Dapr's shapes."""
    d = route.delivery
    retry: dict[str, Any]
    if d.backoff_policy == "constant":  # from a Dapr Resiliency: the same wait every time
        retry = {"policy": "constant", "duration": go_duration(d.backoff_delay)}
    elif d.retry <= 1:
        # With at most one retry every evroute policy is a single wait of backoffDelay
        # (capped), which Dapr's constant policy says exactly.
        retry = {"policy": "constant", "duration": go_duration(min(d.backoff_delay, d.backoff_max))}
    else:
        retry = {"policy": "exponential", "maxInterval": go_duration(d.backoff_max)}
    retry["maxRetries"] = -1 if d.retry >= RETRY_FOREVER else d.retry
    breaker = None
    if d.circuit_breaker is not None:
        breaker = {
            "maxRequests": 1,
            "timeout": go_duration(d.circuit_breaker.cooldown),
            "trip": f"consecutiveFailures >= {d.circuit_breaker.consecutive_failures}",
        }
    return retry, go_duration(d.timeout), breaker


def _resiliency(
    routes: Sequence[Route],
    apps: Mapping[str, str | None],
    namespace: str | None,
    pubsub: str,
    notes: list[str],
) -> dict[str, Any]:
    retries: dict[str, Any] = {}
    timeouts: dict[str, str] = {}
    breakers: dict[str, Any] = {}
    for route in routes:
        retry, timeout, breaker = _policies(route)
        retries[f"{route.name}-retry"] = retry
        timeouts[f"{route.name}-timeout"] = timeout
        if breaker is not None:
            breakers[f"{route.name}-cb"] = breaker
    policies: dict[str, Any] = {"timeouts": timeouts, "retries": retries}
    if breakers:
        policies["circuitBreakers"] = breakers
    # A Resiliency binds one inbound policy set per pub/sub component: the first route's.
    first = routes[0]
    inbound = {"timeout": f"{first.name}-timeout", "retry": f"{first.name}-retry"}
    if f"{first.name}-cb" in breakers:
        inbound["circuitBreaker"] = f"{first.name}-cb"
    for route in routes[1:]:
        if _policies(route) != _policies(first):
            app = apps.get(route.name) or "<app-id>"
            names = ", ".join(
                f"'{route.name}-{kind}'"
                for kind in ("retry", "timeout", "cb")
                if kind != "cb" or route.delivery.circuit_breaker
            )
            notes.append(
                _note(
                    route,
                    "inbound policies of its own",
                    "a Resiliency binds one inbound policy set per pub/sub component and app, and this "
                    f"one binds the policies of route '{first.name}'; {names} are defined: bind them in "
                    f"a copy of the Resiliency with scopes: [{app}]",
                )
            )
    return {
        "apiVersion": RESILIENCY_API,
        "kind": "Resiliency",
        "metadata": _metadata(f"{pubsub}-resiliency", namespace),
        "spec": {
            "policies": policies,
            "targets": {"components": {pubsub: {"inbound": inbound}}},
        },
    }


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's time.ParseDuration reads it (``500ms``, ``1m30s``), which Dapr uses."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if rest:
        text += f"{rest // 1000}s" if rest % 1000 == 0 else f"{rest / 1000:.3f}".rstrip("0") + "s"
    return text


# --- CEL ----------------------------------------------------------------------------------------


def filter_to_cel(filter: Mapping[str, str], filters: Sequence[Any]) -> tuple[str | None, list[str]]:
    """The CEL ``match`` for a route's filter (None: every event), and the parts left out.

    A non-empty ``filters`` overrides ``filter``, as in Knative. ``filters`` is an AND, so leaving
    out a top-level item that holds CESQL only widens the match: the app gets a superset, never
    less. Attributes a CloudEvent may lack are guarded with ``has()``, because reading a missing
    key is an evaluation error in CEL, which Dapr would treat as a failed delivery.
    """
    left_out: list[str] = []
    conjuncts: list[str] = []
    if filters:
        for item in filters:
            try:
                conjuncts.extend(_conjuncts(item))
            except _Untranslatable:
                left_out.append(_describe(item))
    else:
        for key, value in filter.items():
            if value == "":
                conjuncts.append(_guarded(key, f'{_attr(key)} != ""'))
            else:
                conjuncts.append(_compare("exact", key, value))
    return (" && ".join(conjuncts) or None), left_out


def _conjuncts(item: Any) -> list[str]:
    """``item`` as a list of CEL expressions that must all hold."""
    if not item:
        return []  # Knative's "no filter": {} , not: {}, all: [], any: []
    if not isinstance(item, Mapping) or len(item) != 1:
        raise _Untranslatable(item)
    ((dialect, value),) = item.items()
    if not value:
        return []
    if dialect in ("exact", "prefix", "suffix"):
        return [_compare(dialect, str(k), v) for k, v in value.items()]
    if dialect == "all":
        return [part for sub in value for part in _conjuncts(sub)]
    if dialect == "any":
        # An empty alternative is left out of the list, as Knative leaves it out.
        exprs = [_expr(sub) for sub in value if _conjuncts(sub)]
        parts = [f"({p})" if _has_top_level_and(p) else p for p in exprs]
        return ["(" + " || ".join(parts) + ")" if len(parts) > 1 else parts[0]] if parts else []
    if dialect == "not":
        inner = _conjuncts(value)
        return [f"!({_expr(value)})"] if inner else []
    if dialect == "cel":  # already Dapr's language: written back as it is
        return [f"({value.strip()})"]
    raise _Untranslatable(item)


def _expr(item: Any) -> str:
    parts = _conjuncts(item)
    if not parts:
        return "true"
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def _has_top_level_and(expr: str) -> bool:
    """Whether ``expr`` joins terms with ``&&`` outside parentheses and string literals."""
    depth, quoted, escaped = 0, False, False
    for i, ch in enumerate(expr):
        if escaped:
            escaped = False
        elif quoted:
            escaped, quoted = ch == "\\", ch != '"'
        elif ch == '"':
            quoted = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and expr.startswith("&&", i):
            return True
    return False


def _compare(dialect: str, key: str, value: object) -> str:
    lit = json.dumps(str(value), ensure_ascii=False)
    attr = _attr(key)
    test = {
        "exact": f"{attr} == {lit}",
        "prefix": f"{attr}.startsWith({lit})",
        "suffix": f"{attr}.endsWith({lit})",
    }[dialect]
    return _guarded(key, test)


def _guarded(key: str, test: str) -> str:
    if key in _REQUIRED:
        return test
    present = f'"{key}" in event' if key in _CEL_RESERVED else f"has(event.{key})"
    return f"{present} && {test}"


def _attr(key: str) -> str:
    return f'event["{key}"]' if key in _CEL_RESERVED else f"event.{key}"


def _describe(item: Any) -> str:
    if isinstance(item, Mapping) and set(item) == {"cesql"}:
        return f"the cesql filter {json.dumps(item['cesql'], ensure_ascii=False)}"
    return f"the filter item {json.dumps(plain(item), ensure_ascii=False)} (it holds cesql)"
