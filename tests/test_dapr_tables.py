"""Dapr's own test tables (tests/data/dapr, Apache-2.0, see its README) run against evroute:
routing rules, the publish envelope and Resiliency parsing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from evroute import cloudevent
from evroute.dapr_api import envelope
from evroute.delivery.policy import backoff
from evroute.errors import RoutesInvalid
from evroute.routes.load import load_routes_text
from evroute.routes.model import RETRY_FOREVER, RouteSet

DATA = Path(__file__).parent / "data" / "dapr"
APP = "http://127.0.0.1:6001"


def _table(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _routes(text: str, path: Path) -> RouteSet:
    return load_routes_text(text, str(path))


def _subscription_yaml(sub: dict[str, Any]) -> str:
    if "file" in sub:
        return (DATA / sub["file"]).read_text()
    doc = {
        "apiVersion": "dapr.io/v2alpha1",
        "kind": "Subscription",
        "metadata": {"name": "table"},
        "spec": {
            "pubsubname": "pubsub",
            "topic": sub["topic"],
            "routes": {"rules": sub["rules"], **({"default": sub["default"]} if "default" in sub else {})},
        },
        "scopes": ["pubsub-subscriber-routing"],
    }
    return json.dumps(doc)


ROUTING = _table("routing_cases.json")["subscriptions"]


@pytest.mark.parametrize("sub", ROUTING, ids=[s["name"] for s in ROUTING])
def test_dapr_routing_tables_pick_the_same_path(sub: dict[str, Any], tmp_path: Path) -> None:
    text = f"services: {{pubsub-subscriber-routing: {APP}}}\n---\n" + _subscription_yaml(sub)
    [route] = _routes(text, tmp_path / "routes.yaml").routes
    topic = route.filter["topic"]
    for case in sub["cases"]:
        event = cloudevent.make_event(type=case["type"], source="/t", extensions={"topic": topic})
        target = route.subscriber.for_event(event)
        if case["path"] is None:
            assert target is None
            assert not route.matcher.matches_event(event)
            assert (route.matcher.explain_event(event) or "").startswith("no matching rule")
        else:
            assert route.matcher.matches_event(event), case
            assert target is not None and target.uri == f"{APP}/{case['path']}", case
    other = cloudevent.make_event(type=sub["cases"][0]["type"], source="/t", extensions={"topic": "other"})
    assert not route.matcher.matches_event(other)


ENVELOPE = _table("publish_envelope.json")["cases"]


@pytest.mark.parametrize("case", ENVELOPE, ids=[c["name"] for c in ENVELOPE])
def test_dapr_publish_envelope_table(case: dict[str, Any]) -> None:
    event = envelope(
        case["body"].encode(),
        content_type=case["content_type"],
        topic=case["topic"],
        pubsubname=case["pubsub"],
        metadata=case["metadata"],
        traceparent=case.get("traceparent"),
    )
    got = cloudevent.to_dict(event)
    for key, want in case["expect"].items():
        assert got.get(key) == want, (key, got)
    if case["generated_id"]:
        import uuid

        uuid.UUID(got["id"])  # a UUID, as Dapr generates


def test_dapr_resiliency_testdata_is_refused_only_for_retry_matching() -> None:
    text = (DATA / "resiliency.yaml").read_text()
    expected = _table("resiliency_expected.json")
    with pytest.raises(RoutesInvalid) as info:
        load_routes_text(text, "resiliency.yaml")
    [problem] = info.value.problems
    [refused] = expected["refused"]
    line = text.splitlines().index(refused["line_of"]) + 1
    assert problem.startswith(f"resiliency.yaml:{line}:")
    assert refused["says"] in problem


def _without_matching(text: str) -> str:
    """The testdata file minus its ``withMatch`` retry policy (the part evroute refuses)."""
    lines = text.splitlines()
    start = lines.index("      withMatch:")
    end = start + 1
    while end < len(lines) and (lines[end].startswith("        ") or not lines[end].strip()):
        end += 1
    return "\n".join(lines[:start] + lines[end:]) + "\n"


def test_dapr_resiliency_testdata_parses_as_dapr_does(tmp_path: Path) -> None:
    expected = _table("resiliency_expected.json")
    base = _without_matching((DATA / "resiliency.yaml").read_text())
    routes = "routes:\n" + "".join(
        f"  - {{name: on-{p}, broker: {p}, subscriber: {APP}/}}\n" for p in expected["inbound"]
    )
    rs = _routes(base + "---\n" + routes, tmp_path / "routes.yaml")
    for pubsub, want in expected["inbound"].items():
        d = rs.get(f"on-{pubsub}").delivery  # type: ignore[union-attr]
        assert d.retry == want["retry"]
        for key in ("timeout", "backoff_policy", "backoff_delay"):
            if key in want:
                assert getattr(d, key) == want[key]
        if "breaker_failures" in want:
            assert d.circuit_breaker is not None
            assert d.circuit_breaker.consecutive_failures == want["breaker_failures"]
            assert d.circuit_breaker.cooldown == want["breaker_cooldown"]
    assert any("interval is ignored" in n for n in rs.notes)
    assert any("targets.apps.appB" in n for n in rs.notes)
    assert any("statestore1.outbound" in n for n in rs.notes)

    # maxRetries as TestParseMaxRetries reads it: each policy aimed at a pubsub of its own.
    policies = base.split("  targets:")[0]
    targets = "".join(
        f"      p-{name.lower()}:\n        inbound:\n          retry: {name}\n"
        for name in expected["maxRetries"]
    )
    doc = policies + "  targets:\n    components:\n" + targets
    routes = "routes:\n" + "".join(
        f"  - {{name: r-{n.lower()}, broker: p-{n.lower()}, subscriber: {APP}/}}\n"
        for n in expected["maxRetries"]
    )
    rs = _routes(doc + "---\n" + routes, tmp_path / "routes.yaml")
    for name, want in expected["maxRetries"].items():
        got = rs.get(f"r-{name.lower()}").delivery.retry  # type: ignore[union-attr]
        assert got == (RETRY_FOREVER if want == -1 else want), name


def test_resiliency_retry_policies_space_retries_as_dapr(tmp_path: Path) -> None:
    text = textwrap.dedent(
        f"""\
        apiVersion: dapr.io/v1alpha1
        kind: Resiliency
        metadata: {{name: r}}
        spec:
          policies:
            retries:
              steady: {{policy: constant, duration: 2s, maxRetries: 3}}
              growing: {{policy: exponential, maxInterval: 3s, maxRetries: 10}}
          targets:
            components:
              steady: {{inbound: {{retry: steady}}}}
              growing: {{inbound: {{retry: growing}}}}
        ---
        routes:
          - {{name: a, broker: steady, subscriber: {APP}/}}
          - {{name: b, broker: growing, subscriber: {APP}/}}
        """
    )
    rs = _routes(text, tmp_path / "routes.yaml")
    steady = rs.get("a").delivery  # type: ignore[union-attr]
    growing = rs.get("b").delivery  # type: ignore[union-attr]
    assert [backoff(steady, k) for k in (1, 2, 3)] == [2.0, 2.0, 2.0]
    # Dapr's exponential: 500ms × 1.5^(k-1), capped at maxInterval.
    assert [backoff(growing, k) for k in (1, 2, 3, 4, 5, 6)] == [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.0]


def test_loading_the_same_dapr_documents_twice_gives_equal_routes(tmp_path: Path) -> None:
    # The worker compares route sets to decide whether a reload changed anything.
    text = f"services: {{pubsub-subscriber-routing: {APP}}}\n---\n" + _subscription_yaml(ROUTING[0])
    text += "\n---\n" + (DATA / "resiliency.yaml").read_text().replace(
        '        matching:\n          httpStatusCodes: "500"\n', ""
    )
    first = _routes(text, tmp_path / "routes.yaml")
    assert first == _routes(text, tmp_path / "routes.yaml")
    changed = _routes(text.replace("myevent.E", "myevent.X"), tmp_path / "routes.yaml")
    assert first != changed


SUB = """\
services: {app: 'http://127.0.0.1:6001'}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    default: /orders
EXTRA
"""


@pytest.mark.parametrize(
    ("extra", "line", "says"),
    [
        (
            "  bulkSubscribe:\n    enabled: true\n    maxMessagesCount: 100\nscopes: [app]",
            12,
            "bulk subscriptions are not supported",
        ),
        ("  metadata:\n    rawPayload: 'true'\nscopes: [app]", 13, "raw payloads are not supported"),
        ("  deadLetterTopic: orders\nscopes: [app]", 12, "dead letters would loop"),
        ("  priority: high\nscopes: [app]", 12, "unknown key 'priority'"),
        ("scopes: [nobody]", 12, "service 'nobody' is not defined"),
        ("", 3, "scopes is required"),
    ],
)
def test_subscription_fields_evroute_cannot_honour_are_refused_with_their_line(
    extra: str, line: int, says: str
) -> None:
    with pytest.raises(RoutesInvalid) as info:
        load_routes_text(SUB.replace("EXTRA", extra), "routes.yaml")
    [problem] = info.value.problems
    assert problem.startswith(f"routes.yaml:{line}:"), problem
    assert says in problem


def test_several_scopes_give_one_route_per_app_named_after_it(tmp_path: Path) -> None:
    text = SUB.replace(
        "services: {app: 'http://127.0.0.1:6001'}",
        "services: {a: 'http://127.0.0.1:1/x/', b: 'http://127.0.0.1:2'}",
    )
    rs = load_routes_text(
        text.replace("EXTRA", "  bulkSubscribe: {enabled: false}\nscopes: [a, b]"), "routes.yaml"
    )
    assert [(r.name, r.broker, r.subscriber.uri) for r in rs.routes] == [
        ("orders-a", "pubsub", "http://127.0.0.1:1/x/"),
        ("orders-b", "pubsub", "http://127.0.0.1:2"),
    ]
    event = cloudevent.make_event(type="t", source="/s", extensions={"topic": "orders"})
    assert [r.subscriber.for_event(event).uri for r in rs.routes] == [  # type: ignore[union-attr]
        "http://127.0.0.1:1/x/orders",
        "http://127.0.0.1:2/orders",
    ]
    assert all(r.delivery.contract == "dapr" and r.delivery.format == "json" for r in rs.routes)
