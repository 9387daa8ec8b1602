"""Dapr documents in a routes file: ``Subscription`` (``dapr.io/v2alpha1``, ``v1alpha1``) and
``Resiliency`` (``dapr.io/v1alpha1``), read as Dapr writes them.

A Subscription becomes one route per app id in ``scopes``:

- ``spec.pubsubname`` is the broker, ``spec.topic`` the events whose ``topic`` attribute
  equals it (what ``POST /v1.0/publish/<pubsub>/<topic>`` and ``publish --topic`` set);
- each app id resolves through ``services:`` to the app's base URL (the address its Dapr
  sidecar would call); the route is named ``metadata.name`` with one scope and
  ``<name>-<app id>`` with several;
- ``spec.routes.rules`` (CEL ``match``, ``path``; first match wins) and ``spec.routes.default``
  pick the path per event, joined to the app's base URL; an event no rule matches and with no
  default is filtered out (``no matching rule``). v1alpha1's ``spec.route`` is one path;
- ``spec.deadLetterTopic``: dead letters are stored and also published to that topic in the
  same broker;
- deliveries are structured CloudEvents (as Dapr sends them) judged by Dapr's answer contract
  (:mod:`evroute.delivery.policy`).

A Resiliency's policies become the delivery settings of the routes on the pubsub (broker) that
``spec.targets.components.<pubsub>.inbound`` names, as Dapr applies inbound component policies
to deliveries to subscribers. ``apps``, ``actors`` and ``outbound`` targets govern service
invocation and publishing, not deliveries: they are accepted and noted. What evroute cannot
honour (bulk subscriptions, raw payloads, retry ``matching``, a circuit breaker ``trip`` other
than ``consecutiveFailures > N`` / ``>= N``) is refused with its line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from evroute.filters.attributes import as_text
from evroute.filters.matcher import Matcher
from evroute.routes.fields import Checker, RawRoute, Where, show
from evroute.routes.model import RETRY_FOREVER, CircuitBreaker, PathRule, Route
from evroute.routes.yamltree import Doc

SUBSCRIPTION_VERSIONS = ("dapr.io/v2alpha1", "dapr.io/v1alpha1")
RESILIENCY_VERSION = "dapr.io/v1alpha1"
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "scopes", "status")
SPEC_KEYS = {
    "dapr.io/v2alpha1": ("pubsubname", "topic", "metadata", "routes", "deadLetterTopic", "bulkSubscribe"),
    "dapr.io/v1alpha1": ("pubsubname", "topic", "metadata", "route", "deadLetterTopic", "bulkSubscribe"),
}
RETRY_KEYS = ("policy", "duration", "maxInterval", "maxRetries", "matching")
BREAKER_KEYS = ("maxRequests", "interval", "timeout", "trip")
POLICY_NAME_KEYS = ("timeout", "retry", "circuitBreaker")
TRIP = re.compile(r"^\s*consecutiveFailures\s*(>=|>)\s*(\d+)\s*\Z")
TRIP_ALLOWED = "allowed: consecutiveFailures > N or consecutiveFailures >= N"
# Dapr's defaults (dapr/kit retry.DefaultConfig; gobreaker): constant 5s, exponential from
# 500ms ×1.5 up to 60s, maxRetries -1 (forever); a breaker trips at consecutiveFailures > 5
# and stays open 60s.
DEFAULT_DURATION = 5.0
EXPONENTIAL_INITIAL = 0.5
EXPONENTIAL_MULTIPLIER = 1.5
DEFAULT_MAX_INTERVAL = 60.0
DEFAULT_TRIP = 6
DEFAULT_BREAKER_TIMEOUT = 60.0
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Layer = tuple[dict[str, Any], frozenset[str]]


def kind_of(data: Mapping[str, Any]) -> str | None:
    """``Subscription`` or ``Resiliency`` for the Dapr documents evroute reads, else None."""
    version, kind = data.get("apiVersion"), data.get("kind")
    if kind == "Subscription" and version in SUBSCRIPTION_VERSIONS:
        return "Subscription"
    if kind == "Resiliency" and version == RESILIENCY_VERSION:
        return "Resiliency"
    return None


def go_duration(value: object) -> float | None:
    """Seconds in a Go duration (``5s``, ``500ms``, ``1m30s``), or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match[1]) * _GO_UNIT[match[2]]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _duration(c: Checker, value: object, where: Where, scope: str) -> float | None:
    seconds = go_duration(value)
    if seconds is None:
        c.problem(where, scope, f"bad duration {show(value)} (allowed: a Go duration like 500ms, 5s, 1m30s)")
    return seconds


def _name(c: Checker, doc: Doc, what: str) -> tuple[str | None, str]:
    root = Where(doc, ())
    c.keys(doc.data, TOP_KEYS, root, "")
    meta = doc.data.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        c.problem(root, "", f"{what}: metadata.name is required")
        return None, f"{what} at line {doc.start[0]}: "
    return meta["name"], f"{what.lower()} '{meta['name']}': "


# --------------------------------------------------------------------------- Subscription


def read_subscription(c: Checker, doc: Doc) -> list[RawRoute]:
    """The routes of one Subscription (one per scope), with where each part is written."""
    name, scope = _name(c, doc, "Subscription")
    if name is None:
        return []
    version = str(doc.data.get("apiVersion"))
    root = Where(doc, ())
    spec_at = root / "spec"
    spec = c.mapping(doc.data.get("spec"), spec_at, scope, "pubsubname, topic, routes, …")
    if not spec:
        if spec is not None:
            c.problem(spec_at, scope, "spec is required (pubsubname, topic, routes)")
        return []
    c.keys(spec, SPEC_KEYS[version], spec_at, scope)
    for key in ("pubsubname", "topic"):
        if not isinstance(spec.get(key), str) or not spec.get(key):
            c.problem(spec_at / key if key in spec else spec_at, scope, f"{key} is required (text)")
    topic = spec.get("topic") if isinstance(spec.get("topic"), str) else None
    _refuse_unsupported(c, spec, spec_at, scope)

    rules = _rules(c, spec, spec_at, scope, version)
    dead_letter_topic = None
    if "deadLetterTopic" in spec:
        value = spec["deadLetterTopic"]
        if not isinstance(value, str) or not value:
            c.problem(spec_at / "deadLetterTopic", scope, f"must be a topic name, got {show(value)}")
        elif value == topic:
            c.problem(
                spec_at / "deadLetterTopic",
                scope,
                "is the subscription's own topic (dead letters would loop)",
            )
        else:
            dead_letter_topic = value

    apps = _scopes(c, doc, scope)
    if not apps or topic is None or rules is None:
        return []
    matcher = topic_matcher(topic, rules)
    raws = []
    for app, app_at in apps:
        route_name = name if len(apps) == 1 else f"{name}-{app}"
        values: dict[str, Any] = {
            "name": route_name,
            "filter": {"topic": topic},
            "subscriber": {"ref": {"name": app}},
        }
        at: dict[str, Where] = {
            "name": root / "metadata" / "name",
            "filter": spec_at / "topic",
            "subscriber": app_at,
        }
        if "pubsubname" in spec:
            values["broker"], at["broker"] = spec["pubsubname"], spec_at / "pubsubname"

        def finish(route: Route, rules: tuple[PathRule, ...] = rules) -> Route:
            subscriber = dataclasses.replace(route.subscriber, rules=rules)
            return dataclasses.replace(
                route, subscriber=subscriber, matcher=matcher, dead_letter_topic=dead_letter_topic
            )

        raws.append(
            RawRoute(
                values=values,
                at=at,
                where=root,
                scope=f"route '{route_name}': ",
                overrides={"format": "json", "contract": "dapr"},
                finish=finish,
            )
        )
    return raws


def _refuse_unsupported(c: Checker, spec: Mapping[str, Any], spec_at: Where, scope: str) -> None:
    bulk = spec.get("bulkSubscribe")
    if bulk is not None and not (isinstance(bulk, Mapping) and bulk.get("enabled") in (False, None)):
        c.problem(
            spec_at / "bulkSubscribe",
            scope,
            "bulkSubscribe: bulk subscriptions are not supported (evroute delivers one event per "
            "request; allowed: leave bulkSubscribe out or set enabled: false)",
            True,
        )
    metadata = spec.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        c.problem(spec_at / "metadata", scope, f"must be a mapping of text, got {show(metadata)}")
        return
    for key, value in metadata.items():
        if key == "rawPayload" and as_text(value).lower() == "true":
            c.problem(
                spec_at / "metadata" / key,
                scope,
                'raw payloads are not supported (evroute delivers CloudEvents; allowed: rawPayload: "false")',
            )
        elif key != "rawPayload":
            c.note(
                spec_at / "metadata" / key,
                scope,
                f"metadata.{key} is ignored (it configures a pubsub component)",
            )


def _rules(
    c: Checker, spec: Mapping[str, Any], spec_at: Where, scope: str, version: str
) -> tuple[PathRule, ...] | None:
    if version == "dapr.io/v1alpha1":
        path = spec.get("route")
        if not isinstance(path, str):
            c.problem(
                spec_at / "route" if "route" in spec else spec_at, scope, "route is required (the app path)"
            )
            return None
        return (PathRule(None, path),)
    routes_at = spec_at / "routes"
    routes = c.mapping(spec.get("routes"), routes_at, scope, "rules, default")
    if routes is None:
        return None
    if not c.keys(routes, ("rules", "default"), routes_at, scope):
        return None
    out: list[PathRule] = []
    ok = True
    items = routes.get("rules") or []
    if not isinstance(items, list):
        c.problem(routes_at / "rules", scope, f"must be a list of {{match, path}}, got {show(items)}")
        return None
    for i, item in enumerate(items):
        at = routes_at / "rules" / i
        if not isinstance(item, Mapping) or not c.keys(item, ("match", "path"), at, scope):
            if not isinstance(item, Mapping):
                c.problem(at, scope, f"must be {{match: CEL, path: /PATH}}, got {show(item)}")
            ok = False
            continue
        path = item.get("path")
        if not isinstance(path, str) or not path:
            c.problem(at / "path" if "path" in item else at, scope, "path is required (the app path)")
            ok = False
            continue
        source = item.get("match", "")
        if not isinstance(source, str):
            c.problem(at / "match", scope, f"must be a CEL expression (text), got {show(source)}")
            ok = False
            continue
        if not source.strip():  # Dapr: an empty match always matches
            out.append(PathRule(None, path))
            continue
        rule = _cel_rule(c, source.strip(), path, at / "match", scope, f"rules[{i}]")
        if rule is None:
            ok = False
        else:
            out.append(rule)
    default = routes.get("default")
    if default is not None:
        if not isinstance(default, str) or not default:
            c.problem(routes_at / "default", scope, f"must be a path, got {show(default)}")
            return None
        out.append(PathRule(None, default))
    if ok and not out:
        c.problem(routes_at, scope, "needs rules or a default (Dapr drops a subscription without routes)")
        return None
    return tuple(out) if ok else None


def _cel_rule(c: Checker, source: str, path: str, where: Where, scope: str, label: str) -> PathRule | None:
    from evroute.filters import cel  # cel-python loads only for routes that use CEL

    problem = cel.check(source)
    if problem is not None:
        c.problem(where, scope, problem)
        return None
    expression = cel.compile_cel(source)

    def explain(a: Mapping[str, object]) -> str | None:
        why = expression.explain(a)
        return None if why is None else f'{label} "{source}" ({why})'

    return PathRule(Matcher(expression.matches, explain, f"cel {source!r}", needs_event=True), path, source)


def topic_matcher(topic: str, rules: tuple[PathRule, ...]) -> Matcher:
    """Events of ``topic`` that some rule accepts; ``explain`` says ``no matching rule``."""
    tests = tuple(r.match.matches if r.match is not None else None for r in rules)
    always = any(t is None for t in tests)

    def matches(a: Mapping[str, object]) -> bool:
        value = a.get("topic")
        if value != topic and (value is None or as_text(value) != topic):
            return False
        if always:
            return True
        for test in tests:  # noqa: SIM110 - a plain loop: no generator frame per event
            if test is not None and test(a):
                return True
        return False

    def explain(a: Mapping[str, object]) -> str | None:
        value = a.get("topic")
        if value is None or as_text(value) != topic:
            seen = "attribute missing" if value is None else f"got {as_text(value)!r}"
            return f"topic: expected {topic!r}, {seen}"
        if matches(a):
            return None
        whys = "; ".join(str(r.match.explain(a)) for r in rules if r.match is not None)
        return f"no matching rule ({whys})"

    needs = any(r.match is not None for r in rules)
    return Matcher(matches, explain, f"topic={topic}, {len(rules)} path rules", needs_event=needs)


def _scopes(c: Checker, doc: Doc, scope: str) -> list[tuple[str, Where]]:
    at = Where(doc, ("scopes",))
    value = doc.data.get("scopes")
    if value is None:
        c.problem(
            Where(doc, ()),
            scope,
            "scopes is required: the app id(s) that receive the events, each named under services: "
            "with its base URL (e.g. services: {order-processor: http://127.0.0.1:6001})",
        )
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        c.problem(at, scope, f"must be a non-empty list of app ids, got {show(value)}")
        return []
    seen: list[tuple[str, Where]] = []
    for i, app in enumerate(value):
        if app in (s for s, _ in seen):
            c.problem(at / i, scope, f"app id '{app}' is listed twice (keep one)")
            continue
        seen.append((app, at / i))
    return seen


# --------------------------------------------------------------------------- Resiliency


class Resiliency:
    """The delivery layers that Resiliency documents give to brokers (pubsub components)."""

    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}
        self.targeted_at: dict[str, int] = {}

    def read(self, c: Checker, doc: Doc) -> None:
        name, scope = _name(c, doc, "Resiliency")
        if name is None:
            return
        root = Where(doc, ())
        if "scopes" in doc.data:
            c.note(
                root / "scopes", scope, "scopes is ignored: the policies apply to every route of the pubsub"
            )
        spec_at = root / "spec"
        spec = c.mapping(doc.data.get("spec"), spec_at, scope, "policies, targets")
        if not spec or not c.keys(spec, ("policies", "targets"), spec_at, scope):
            return
        policies_at = spec_at / "policies"
        policies = c.mapping(spec.get("policies"), policies_at, scope, "timeouts, retries, circuitBreakers")
        if policies is None or not c.keys(
            policies, ("timeouts", "retries", "circuitBreakers"), policies_at, scope
        ):
            return
        timeouts = self._named(c, policies, "timeouts", policies_at, scope, self._timeout)
        retries = self._named(c, policies, "retries", policies_at, scope, self._retry)
        breakers = self._named(c, policies, "circuitBreakers", policies_at, scope, self._breaker)
        known = {"timeout": timeouts, "retry": retries, "circuitBreaker": breakers}
        self._targets(c, spec.get("targets"), spec_at / "targets", scope, known)

    def _named(
        self, c: Checker, policies: Mapping[str, Any], key: str, at: Where, scope: str, parse: Any
    ) -> dict[str, dict[str, Any] | None]:
        body = c.mapping(policies.get(key), at / key, scope, "name: policy")
        out: dict[str, dict[str, Any] | None] = {}
        for name, value in (body or {}).items():
            out[name] = parse(c, value, at / key / name, scope)
        return out

    def _timeout(self, c: Checker, value: object, at: Where, scope: str) -> dict[str, Any] | None:
        seconds = _duration(c, value, at, scope)
        if seconds is None:
            return None
        if seconds <= 0:
            c.problem(at, scope, f"must be longer than zero, got {show(value)}")
            return None
        return {"timeout": seconds}

    def _retry(self, c: Checker, value: object, at: Where, scope: str) -> dict[str, Any] | None:
        body = c.mapping(value, at, scope, "policy, duration, maxInterval, maxRetries")
        if body is None or not c.keys(body, RETRY_KEYS, at, scope):
            return None
        if "matching" in body:
            c.problem(
                at / "matching",
                scope,
                "retry matching is not supported (evroute decides what is retried by Dapr's answer "
                "contract; allowed: leave matching out)",
                True,
            )
            return None
        policy = c.choice(
            body.get("policy", "constant"), ("constant", "exponential"), at / "policy", scope, "policy"
        )
        retries = RETRY_FOREVER
        if "maxRetries" in body:
            raw = body["maxRetries"]
            if raw == -1 and not isinstance(raw, bool):
                retries = RETRY_FOREVER
            else:
                parsed = c.integer(raw, 0, at / "maxRetries", scope)
                if parsed is None:
                    return None
                retries = parsed
        duration = DEFAULT_DURATION
        if "duration" in body:
            found = _duration(c, body["duration"], at / "duration", scope)
            if found is None:
                return None
            duration = found
        max_interval = DEFAULT_MAX_INTERVAL
        if "maxInterval" in body:
            found = _duration(c, body["maxInterval"], at / "maxInterval", scope)
            if found is None:
                return None
            max_interval = found
        if policy is None:
            return None
        if policy == "constant":
            return {
                "retry": retries,
                "backoff_policy": "constant",
                "backoff_delay": duration,
                "backoff_max": max(duration, 0.0),
            }
        return {
            "retry": retries,
            "backoff_policy": "exponential",
            "backoff_delay": EXPONENTIAL_INITIAL,
            "backoff_multiplier": EXPONENTIAL_MULTIPLIER,
            "backoff_max": max_interval,
        }

    def _breaker(self, c: Checker, value: object, at: Where, scope: str) -> dict[str, Any] | None:
        body = c.mapping(value, at, scope, "maxRequests, interval, timeout, trip")
        if body is None or not c.keys(body, BREAKER_KEYS, at, scope):
            return None
        failures = DEFAULT_TRIP
        if "trip" in body:
            trip = body["trip"]
            found = TRIP.match(trip) if isinstance(trip, str) else None
            if found is None:
                c.problem(at / "trip", scope, f"trip {show(trip)} is not supported ({TRIP_ALLOWED})")
                return None
            failures = int(found[2]) + (1 if found[1] == ">" else 0)
            if failures < 1:
                c.problem(
                    at / "trip",
                    scope,
                    f"trip {show(trip)} would trip before any failure ({TRIP_ALLOWED}, N >= 1)",
                )
                return None
        if "maxRequests" in body and body["maxRequests"] != 1:
            c.problem(
                at / "maxRequests",
                scope,
                f"maxRequests {show(body['maxRequests'])} is not supported (a half-open breaker probes "
                "with one delivery; allowed: 1)",
            )
            return None
        if "interval" in body:
            if _duration(c, body["interval"], at / "interval", scope) is None:
                return None
            c.note(at / "interval", scope, "interval is ignored: consecutive failures count until a success")
        cooldown = DEFAULT_BREAKER_TIMEOUT
        if "timeout" in body:
            found_timeout = _duration(c, body["timeout"], at / "timeout", scope)
            if found_timeout is None:
                return None
            cooldown = found_timeout
        return {"circuit_breaker": CircuitBreaker(consecutive_failures=failures, cooldown=cooldown)}

    def _targets(self, c: Checker, value: object, at: Where, scope: str, known: dict[str, Any]) -> None:
        body = c.mapping(value, at, scope, "apps, actors, components")
        if body is None or not c.keys(body, ("apps", "actors", "components"), at, scope):
            return
        for key in ("apps", "actors"):
            for target in body.get(key) or {}:
                c.note(
                    at / key / target,
                    scope,
                    f"targets.{key}.{target} governs service invocation, not deliveries: not applied",
                )
        components = c.mapping(
            body.get("components"), at / "components", scope, "pubsub: {inbound, outbound}"
        )
        for pubsub, names in (components or {}).items():
            where = at / "components" / pubsub
            directions = c.mapping(names, where, scope, "inbound, outbound")
            if directions is None or not c.keys(directions, ("inbound", "outbound"), where, scope):
                continue
            if "outbound" in directions:
                c.note(
                    where / "outbound",
                    scope,
                    f"targets.components.{pubsub}.outbound governs publishing, not deliveries: not applied",
                )
            if "inbound" not in directions:
                continue
            layer = self._inbound(c, directions["inbound"], where / "inbound", scope, known)
            if layer is None or c.name(pubsub, where, scope) is None:
                continue
            if pubsub in self.layers:
                c.problem(
                    where,
                    scope,
                    f"pubsub '{pubsub}' already has inbound policies (first at line {self.targeted_at[pubsub]}; keep one)",
                    True,
                )
                continue
            self.layers[pubsub] = (layer, frozenset())
            self.targeted_at[pubsub] = where.pos(True)[0]

    def _inbound(
        self, c: Checker, value: object, at: Where, scope: str, known: dict[str, Any]
    ) -> dict[str, Any] | None:
        names = c.mapping(value, at, scope, "timeout, retry, circuitBreaker")
        if names is None or not c.keys(names, POLICY_NAME_KEYS, at, scope):
            return None
        layer: dict[str, Any] = {}
        section = {"timeout": "timeouts", "retry": "retries", "circuitBreaker": "circuitBreakers"}
        for key, name in names.items():
            table = known[key]
            if name not in table:
                defined = ", ".join(sorted(table)) or "none defined"
                c.problem(
                    at / key,
                    scope,
                    f"{key} policy {show(name)} is not defined under spec.policies.{section[key]} (defined: {defined})",
                )
                return None
            if table[name] is None:  # its own problem is already reported
                return None
            layer.update(table[name])
        return layer


__all__ = ["Resiliency", "go_duration", "kind_of", "read_subscription", "topic_matcher"]
