"""`evroute export knative` / `export dapr`: manifests valid against the Knative CRDs, a round trip
back through the loader, every inexpressible setting named on stderr, and no secret anywhere."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import run_cli

from evroute.cli import main
from evroute.export import dump_stream, service_for
from evroute.export.dapr import filter_to_cel, go_duration, to_dapr
from evroute.export.knative import ORDER_ANNOTATION, to_knative
from evroute.filters import compile_filters
from evroute.routes.load import load_routes_text
from evroute.routes.model import RouteSet

CRDS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "anchors"
    / "knative-eventing"
    / "config"
    / "core"
    / "resources"
)

# The user's document: the scenario's Broker and two Triggers as written, plus the names their
# `subscriber.ref`s point at.
SCENARIO = """\
services:
  inventory-service: http://127.0.0.1:8081/
  payment-service: http://127.0.0.1:8082/
  inventory-dlq: http://127.0.0.1:8083/inventory
  payment-dlq: http://127.0.0.1:8083/payment
---
# Broker (事件分发中心)
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: order-broker
---
# Trigger 1: 库存处理
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: inventory-trigger
spec:
  broker: order-broker
  filter:
    attributes:
      type: order.placed
  subscriber:
    ref:
      apiVersion: v1
      kind: Service
      name: inventory-service
  delivery:
    retry: 3
    backoffPolicy: exponential
    deadLetterSink:
      ref:
        apiVersion: v1
        kind: Service
        name: inventory-dlq
---
# Trigger 2: 支付处理
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: payment-trigger
spec:
  broker: order-broker
  filter:
    attributes:
      type: order.placed
  subscriber:
    ref:
      apiVersion: v1
      kind: Service
      name: payment-service
  delivery:
    retry: 5  # 支付可以重试更多次
    backoffPolicy: exponential
    deadLetterSink:
      ref:
        apiVersion: v1
        kind: Service
        name: payment-dlq
"""

TOKEN = "tok-7f3a9c1e5d"
SIGNING = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"SHOP_TOKEN": TOKEN, "SHOP_SIGNING": SIGNING}

# One route using every setting a target may lack, one command route, one ordered route.
EVERYTHING = """\
services:
  audit-service: http://127.0.0.1:7001/
routes:
  - name: audit
    broker: orders
    filters:
      - exact: {type: order.placed}
      - prefix: {source: /shop/}
      - any:
          - suffix: {subject: -eu}
          - not: {exact: {region: us}}
      - cesql: "subject LIKE 'eu-%'"
    subscriber: http://127.0.0.1:7001/audit?token=${SHOP_TOKEN}
    delivery:
      retry: 10
      backoffPolicy: linear
      backoffDelay: 2s
      backoffMax: PT5S
      retryAfterMax: PT10S
      concurrency: 4
      format: json
      circuitBreaker: {consecutiveFailures: 5, cooldown: PT30S}
      deadLetterSink: {command: [python3, -c, "pass"]}
    headers: {Authorization: "Bearer ${SHOP_TOKEN}"}
    signing: {secret: "${SHOP_SIGNING}"}
    start: earliest
    paused: true
  - name: ship
    filter: {type: order.paid}
    subscriber: {command: [python3, -c, "pass"]}
  - name: ledger
    subscriber: http://127.0.0.1:7002/ledger
    delivery: {ordering: ordered, retry: 1}
"""


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> RouteSet:
    return load_routes_text(text, str(tmp_path / "routes.yaml"), env or ENV)


def run(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    """The real entry point (one error path) on a routes file holding ``text``."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(text, encoding="utf-8")
    return run_cli("--routes", str(routes), "--db", str(tmp_path / "ev.db"), *args, env=ENV)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


# --------------------------------------------------------------------------- Knative schema


def _structural(schema: Any) -> Any:
    """A CRD schema as jsonschema reads it: ``x-kubernetes-*`` keys dropped, and every object that
    lists properties without ``x-kubernetes-preserve-unknown-fields`` closed to other keys, since
    the API server prunes those (a field the CRD does not know would vanish on apply)."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


# The EventTransform CRD (v1alpha1) is kept with the tests' data, its source and licence named there.
TRANSFORM_CRD = Path(__file__).resolve().parent / "data" / "knative" / "eventtransform.yaml"


def crd_validator(kind: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    path = TRANSFORM_CRD if kind == "EventTransform" else CRDS / f"{kind.lower()}.yaml"
    if not path.exists():
        pytest.skip(f"Knative CRD anchor {path} is absent (shared/anchors/knative-eventing not laid out)")
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    api = "v1alpha1" if kind == "EventTransform" else "v1"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == api)
    schema = _structural(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # The API server adds these to every kind; the CRD schema leaves them out.
    schema["properties"].update(
        apiVersion={"type": "string", "const": f"eventing.knative.dev/{api}"},
        kind={"type": "string", "const": kind},
        metadata={
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
    )
    schema["required"] = ["apiVersion", "kind", "metadata"]
    return jsonschema.Draft7Validator(schema)


def assert_valid(manifests: list[dict[str, Any]]) -> None:
    validators = {kind: crd_validator(kind) for kind in ("Broker", "Trigger", "EventTransform")}
    for manifest in manifests:
        errors = [e.message for e in validators[manifest["kind"]].iter_errors(manifest)]
        assert not errors, (manifest["metadata"]["name"], errors)
        if manifest["kind"] == "Trigger":
            # Knative's webhook requires an addressable subscriber and a broker.
            assert manifest["spec"]["broker"]
            assert manifest["spec"]["subscriber"].get("uri") or manifest["spec"]["subscriber"].get("ref")
        if manifest["kind"] == "EventTransform":
            # Knative's webhook: one transformation, and reply only with a sink.
            assert manifest["spec"]["jsonata"]["expression"]
            assert "reply" not in manifest["spec"] or "sink" in manifest["spec"]


def test_validator_rejects_what_the_crd_would_prune() -> None:
    trigger = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t"},
        "spec": {"broker": "b", "subscriber": {"uri": "http://x/", "headers": {"a": "b"}}},
    }
    assert list(crd_validator("Trigger").iter_errors(trigger))
    trigger["spec"]["subscriber"] = {"uri": "http://x/"}
    trigger["spec"]["delivery"] = {"retry": "three"}
    assert list(crd_validator("Trigger").iter_errors(trigger))


# --------------------------------------------------------------------------- Knative


def test_scenario_exports_its_broker_and_triggers(tmp_path: Path) -> None:
    manifests, notes = to_knative(load(SCENARIO, tmp_path), "shop")
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        ("Broker", "order-broker"),
        ("Trigger", "inventory-trigger"),
        ("Trigger", "payment-trigger"),
    ]
    assert manifests[0] == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "order-broker", "namespace": "shop"},
    }
    assert manifests[2] == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "payment-trigger", "namespace": "shop"},
        "spec": {
            "broker": "order-broker",
            "filter": {"attributes": {"type": "order.placed"}},
            "subscriber": {"uri": "http://127.0.0.1:8082/"},
            "delivery": {
                "retry": 5,
                "backoffPolicy": "exponential",
                "backoffDelay": "PT1S",
                "timeout": "PT30S",
                "deadLetterSink": {"uri": "http://127.0.0.1:8083/payment"},
            },
        },
    }
    assert notes == []  # the scenario says nothing Knative cannot say
    assert_valid(manifests)


def test_service_refs_give_back_the_scenarios_refs(tmp_path: Path) -> None:
    manifests, _ = to_knative(load(SCENARIO, tmp_path), None, service_refs=True)
    trigger = by_kind(manifests, "Trigger")["inventory-trigger"]
    assert trigger["spec"]["subscriber"] == {
        "ref": {"apiVersion": "v1", "kind": "Service", "name": "inventory-service"}
    }
    assert trigger["spec"]["delivery"]["deadLetterSink"] == {
        "ref": {"apiVersion": "v1", "kind": "Service", "name": "inventory-dlq"}
    }
    assert "namespace" not in trigger["metadata"]
    assert_valid(manifests)


def test_service_for_finds_the_longest_base_and_the_rest() -> None:
    services = {"shop": "http://h:1/", "api": "http://h:1/api/", "dlq": "http://h:2/dlq"}
    assert service_for("http://h:1/api/orders?x=1", services) == ("api", "orders?x=1")
    assert service_for("http://h:1/other", services) == ("shop", "other")
    assert service_for("http://h:2/dlq", services) == ("dlq", "")
    assert service_for("http://h:2/dlqx", services) is None
    assert service_for("http://h:3/", services) is None


def _same_routes(before: RouteSet, after: RouteSet) -> None:
    assert [r.name for r in after.routes] == [r.name for r in before.routes]
    for a, b in zip(before.routes, after.routes, strict=True):
        assert (b.broker, dict(b.filter), list(b.filters)) == (a.broker, dict(a.filter), list(a.filters))
        assert b.subscriber.uri == a.subscriber.uri
        da, db = a.delivery, b.delivery
        assert (db.retry, db.backoff_policy, db.backoff_delay, db.timeout) == (
            da.retry,
            da.backoff_policy,
            da.backoff_delay,
            da.timeout,
        )
        assert (db.format, db.ordering) == (da.format, da.ordering)
        assert (db.dead_letter_sink and db.dead_letter_sink.uri) == (
            da.dead_letter_sink and da.dead_letter_sink.uri
        )


def test_round_trip_through_the_loader(tmp_path: Path) -> None:
    before = load(SCENARIO, tmp_path)
    manifests, _ = to_knative(before, "shop")
    _same_routes(before, load(dump_stream(manifests), tmp_path))


def test_round_trip_with_service_refs(tmp_path: Path) -> None:
    before = load(SCENARIO, tmp_path)
    manifests, _ = to_knative(before, None, service_refs=True)
    services = SCENARIO.split("---")[0]
    _same_routes(before, load(services + "---\n" + dump_stream(manifests), tmp_path))


def test_round_trip_of_dialect_filters_ordering_and_format(tmp_path: Path) -> None:
    text = """\
routes:
  - name: eu-orders
    broker: orders
    filters:
      - any:
          - prefix: {source: /shop/eu/}
          - not: {suffix: {subject: -test}}
      - cesql: "type LIKE 'order.%'"
    subscriber: http://127.0.0.1:7003/eu
    delivery: {format: json, ordering: ordered, backoffPolicy: linear, backoffDelay: 500ms, retry: 2}
"""
    before = load(text, tmp_path)
    manifests, _ = to_knative(before, None)
    trigger = by_kind(manifests, "Trigger")["eu-orders"]
    assert trigger["metadata"]["annotations"] == {ORDER_ANNOTATION: "ordered"}
    assert trigger["spec"]["delivery"]["format"] == "json"
    assert trigger["spec"]["delivery"]["backoffDelay"] == "PT0.5S"
    assert_valid(manifests)
    _same_routes(before, load(dump_stream(manifests), tmp_path))


def test_cli_knative_names_what_it_cannot_express_and_hides_secrets(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, EVERYTHING, "export", "knative", "--namespace", "shop")
    assert code == 0, err
    manifests = list(yaml.safe_load_all(out))
    assert_valid(manifests)
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        ("Broker", "orders"),
        ("Broker", "default"),
        ("Trigger", "audit"),  # the command route 'ship' is left out
        ("Trigger", "ledger"),
    ]
    audit = by_kind(manifests, "Trigger")["audit"]
    assert audit["spec"]["subscriber"] == {"uri": "http://127.0.0.1:7001/audit?token=***"}
    assert "deadLetterSink" not in audit["spec"]["delivery"]
    assert audit["spec"]["filters"][3] == {"cesql": "subject LIKE 'eu-%'"}
    lines = err.splitlines()
    assert all(
        line.startswith("Warning: route '") and "cannot be expressed in Knative (" in line for line in lines
    )
    said = {
        (m[1], m[2])
        for m in (re.match(r"Warning: route '([^']+)': (.+?) cannot be expressed", line) for line in lines)
        if m
    }
    assert said == {
        ("audit", "a command deadLetterSink"),
        ("audit", "paused: true"),
        ("audit", "start: earliest"),
        ("audit", "concurrency: 4"),
        ("audit", "backoffMax: PT5S"),
        ("audit", "retryAfterMax: PT10S"),
        ("audit", "circuitBreaker"),
        ("audit", "headers (Authorization)"),
        ("audit", "signing"),
        ("ship", "a command subscriber"),
        ("ledger", "ordering: ordered"),
    }
    assert "Kafka" in next(line for line in lines if "'ledger'" in line)
    for secret in (TOKEN, SIGNING, SIGNING.removeprefix("whsec_")):
        assert secret not in out
        assert secret not in err


def test_cli_knative_rejects_a_bad_namespace(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, SCENARIO, "export", "knative", "--namespace", "Shop_1")
    assert (code, out) == (2, "")
    assert err.startswith("Error: --namespace 'Shop_1' is not a valid name (")


def test_cli_knative_output_is_a_yaml_stream(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, SCENARIO, "export", "knative")
    assert (code, err) == (0, "")
    assert out.count("\n---\n") == 2
    assert "# " not in out and "库存" not in out  # comments are not carried over
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == [
        "order-broker",
        "inventory-trigger",
        "payment-trigger",
    ]


# --------------------------------------------------------------------------- Dapr


def test_scenario_as_dapr_subscriptions_and_resiliency(tmp_path: Path) -> None:
    manifests, notes = to_dapr(load(SCENARIO, tmp_path), "shop", pubsub="orders-pubsub")
    subs = by_kind(manifests, "Subscription")
    assert list(subs) == [
        "inventory-trigger",
        "inventory-trigger-dlq",
        "payment-trigger",
        "payment-trigger-dlq",
    ]
    for sub in subs.values():
        assert sub["apiVersion"] == "dapr.io/v2alpha1"
        assert sub["metadata"]["namespace"] == "shop"
        spec = sub["spec"]
        assert spec["pubsubname"] == "orders-pubsub"
        assert spec["topic"] and spec["routes"]
        for rule in spec["routes"].get("rules", []):
            assert set(rule) == {"match", "path"} and rule["match"] and rule["path"].startswith("/")
    assert subs["payment-trigger"]["spec"] == {
        "pubsubname": "orders-pubsub",
        "topic": "order-broker",
        "routes": {"rules": [{"match": 'event.type == "order.placed"', "path": "/"}]},
        "deadLetterTopic": "payment-trigger-dlq",
    }
    assert subs["payment-trigger"]["scopes"] == ["payment-service"]
    assert subs["payment-trigger-dlq"]["spec"]["topic"] == "payment-trigger-dlq"
    assert subs["payment-trigger-dlq"]["spec"]["routes"] == {"default": "/"}
    assert subs["payment-trigger-dlq"]["scopes"] == ["payment-dlq"]

    (resiliency,) = by_kind(manifests, "Resiliency").values()
    assert resiliency["apiVersion"] == "dapr.io/v1alpha1"
    assert resiliency["metadata"] == {"name": "orders-pubsub-resiliency", "namespace": "shop"}
    policies = resiliency["spec"]["policies"]
    assert policies["retries"] == {
        "inventory-trigger-retry": {"policy": "exponential", "maxInterval": "1m", "maxRetries": 3},
        "payment-trigger-retry": {"policy": "exponential", "maxInterval": "1m", "maxRetries": 5},
    }
    assert policies["timeouts"] == {"inventory-trigger-timeout": "30s", "payment-trigger-timeout": "30s"}
    assert "circuitBreakers" not in policies
    assert resiliency["spec"]["targets"] == {
        "components": {
            "orders-pubsub": {
                "inbound": {"timeout": "inventory-trigger-timeout", "retry": "inventory-trigger-retry"}
            }
        }
    }
    # One Resiliency binds one inbound policy set; payment's 5 retries need a scoped copy.
    assert len(notes) == 1
    assert notes[0].startswith(
        "route 'payment-trigger': inbound policies of its own cannot be expressed in Dapr ("
    )
    assert "scopes: [payment-service]" in notes[0]


def test_cli_dapr_names_what_it_cannot_express_and_hides_secrets(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, EVERYTHING, "export", "dapr")
    assert code == 0, err
    manifests = list(yaml.safe_load_all(out))
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        ("Subscription", "audit"),
        ("Subscription", "ledger"),
        ("Resiliency", "pubsub-resiliency"),
    ]
    audit = manifests[0]
    assert audit["scopes"] == ["audit-service"]
    (rule,) = audit["spec"]["routes"]["rules"]
    assert rule["path"] == "/audit?token=***"
    assert "cesql" not in rule["match"] and "LIKE" not in rule["match"]
    assert audit["spec"]["deadLetterTopic"] == "audit-dlq"
    policies = manifests[2]["spec"]["policies"]
    assert policies["circuitBreakers"] == {
        "audit-cb": {"maxRequests": 1, "timeout": "30s", "trip": "consecutiveFailures >= 5"}
    }
    assert policies["retries"]["audit-retry"] == {
        "policy": "exponential",
        "maxInterval": "5s",
        "maxRetries": 10,
    }
    assert policies["retries"]["ledger-retry"] == {"policy": "constant", "duration": "1s", "maxRetries": 1}
    lines = err.splitlines()
    assert all(
        line.startswith("Warning: route '") and "cannot be expressed in Dapr (" in line for line in lines
    )
    said = {
        (m[1], m[2])
        for m in (re.match(r"Warning: route '([^']+)': (.+?) cannot be expressed", line) for line in lines)
        if m
    }
    assert said == {
        ("audit", "the cesql filter \"subject LIKE 'eu-%'\""),
        ("audit", "a command deadLetterSink"),
        ("audit", "paused: true"),
        ("audit", "start: earliest"),
        ("audit", "concurrency: 4"),
        ("audit", "backoffPolicy: linear"),
        ("audit", "retryAfterMax: 10s"),
        ("audit", "headers (Authorization)"),
        ("audit", "signing"),
        ("ship", "a command subscriber"),
        ("ledger", "the subscriber host"),
        ("ledger", "ordering: ordered"),
        ("ledger", "inbound policies of its own"),
    }
    for secret in (TOKEN, SIGNING, SIGNING.removeprefix("whsec_")):
        assert secret not in out
        assert secret not in err


def test_cli_dapr_pubsub_option(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, SCENARIO, "export", "dapr", "--pubsub", "kafka-pubsub")
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert {d["spec"]["pubsubname"] for d in docs if d["kind"] == "Subscription"} == {"kafka-pubsub"}
    assert list(docs[-1]["spec"]["targets"]["components"]) == ["kafka-pubsub"]
    code, _, err = run(tmp_path, SCENARIO, "export", "dapr", "--pubsub", "Kafka PubSub")
    assert code == 2 and err.startswith("Error: --pubsub 'Kafka PubSub' is not a valid name (")


def test_cel_translation() -> None:
    assert filter_to_cel({"type": "order.placed"}, []) == ('event.type == "order.placed"', [])
    assert filter_to_cel({}, []) == (None, [])
    assert filter_to_cel({"subject": ""}, []) == ('has(event.subject) && event.subject != ""', [])
    assert filter_to_cel({"type": 'say "hi"\\'}, []) == (r'event.type == "say \"hi\"\\"', [])
    assert filter_to_cel({}, [{"prefix": {"source": "/shop/"}}]) == ('event.source.startsWith("/shop/")', [])
    assert filter_to_cel({}, [{"suffix": {"in": "x"}}]) == ('"in" in event && event["in"].endsWith("x")', [])
    match, left_out = filter_to_cel(
        {"type": "ignored: filters override filter"},
        [
            {"all": [{"exact": {"type": "a"}}, {"exact": {"region": "eu"}}]},
            {"any": [{"exact": {"type": "b"}}, {"not": {"prefix": {"subject": "t-"}}}]},
            {"all": [{"cesql": "true"}]},
        ],
    )
    assert match == (
        'event.type == "a" && has(event.region) && event.region == "eu" && '
        '(event.type == "b" || !(has(event.subject) && event.subject.startsWith("t-")))'
    )
    assert left_out == ['the filter item {"all": [{"cesql": "true"}]} (it holds cesql)']
    assert filter_to_cel({}, [{"cesql": "type = 'a'"}]) == (None, ["the cesql filter \"type = 'a'\""])


FILTER_CASES: list[tuple[dict[str, str], list[Any]]] = [
    ({"type": "order.placed"}, []),
    ({"type": "order.placed", "subject": ""}, []),
    ({}, [{"all": [{"exact": {"type": "order.placed"}}, {"exact": {"region": "eu"}}]}]),
    ({}, [{"prefix": {"source": "/shop/"}}, {"suffix": {"subject": "-eu"}}]),
    ({}, [{"any": [{"exact": {"region": "eu"}}, {"not": {"prefix": {"subject": "t-"}}}]}]),
    ({}, [{"not": {"all": [{"exact": {"type": "order.placed"}}, {"exact": {"region": "us"}}]}}]),
    (
        {},
        [
            {"exact": {"type": "order.placed", "region": "eu"}},
            {"prefix": {"source": "/shop/", "subject": "o"}},
        ],
    ),
    ({}, [{"any": [{"exact": {"region": "eu"}}, {"not": {}}]}, {}, {"all": []}]),
    ({}, [{"suffix": {"subject": "-eu", "source": "eu"}}, {"any": []}]),
]
EVENTS: list[dict[str, str]] = [
    {"id": "1", "source": "/shop/eu", "type": "order.placed", "specversion": "1.0"},
    {
        "id": "2",
        "source": "/shop/eu",
        "type": "order.placed",
        "specversion": "1.0",
        "subject": "o-eu",
        "region": "eu",
    },
    {
        "id": "3",
        "source": "/shop/us",
        "type": "order.placed",
        "specversion": "1.0",
        "subject": "t-us",
        "region": "us",
    },
    {"id": "4", "source": "/other", "type": "order.paid", "specversion": "1.0", "subject": ""},
    {"id": "5", "source": "/shop/", "type": "order.placed", "specversion": "1.0", "subject": "t-eu"},
]


@pytest.mark.parametrize(("filter", "filters"), FILTER_CASES)
def test_cel_agrees_with_the_route_filter(filter: dict[str, str], filters: list[Any]) -> None:
    """The translated CEL, run by a real CEL evaluator, matches exactly the events evroute's own
    filter matches, and never fails on a missing attribute."""
    celpy = pytest.importorskip("celpy", reason="cel-python is not installed (pip install cel-python)")
    match, left_out = filter_to_cel(filter, filters)
    assert match is not None and left_out == []
    env = celpy.Environment()
    program = env.program(env.compile(match))
    matcher = compile_filters(filter, filters)
    for event in EVENTS:
        got = program.evaluate(celpy.json_to_cel({"event": event}))
        assert isinstance(got, celpy.celtypes.BoolType), (match, event, got)
        assert bool(got) == matcher.matches(event), (match, event)


def test_go_durations() -> None:
    assert [go_duration(s) for s in (0, 0.2, 1, 1.5, 60, 90, 3600, 5400.25)] == [
        "0s",
        "200ms",
        "1s",
        "1.5s",
        "1m",
        "1m30s",
        "1h",
        "1h30m0.25s",
    ]


def test_cli_without_a_routes_file_is_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    with runner.isolation() as (out, err, _), pytest.raises(SystemExit) as exc:
        main(["--routes", str(tmp_path / "missing.yaml"), "export", "knative"])
    assert exc.value.code == 2
    assert out.getvalue() == b""
    assert err.getvalue().decode().startswith(f"Error: routes file {tmp_path / 'missing.yaml'} not found")


# --------------------------------------------------------------------------- transforms

TRANSFORMS = """\
services:
  ledger: http://127.0.0.1:8081/
routes:
  - name: own
    broker: orders
    filter: {type: order.placed}
    subscriber: {uri: http://127.0.0.1:8082/own}
    transform:
      jsonata: |
        {"specversion": "1.0", "id": id, "source": source, "type": "order.own", "data": data}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventTransform
metadata: {name: summary}
spec:
  jsonata:
    expression: |
      {"specversion": "1.0", "id": id, "source": source,
       "type": "order.summary"}
  sink: {ref: {apiVersion: v1, kind: Service, name: ledger}, uri: /summary}
  reply: {jsonata: {expression: '$merge([$, {"type": "order.booked"}])'}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventTransform
metadata: {name: enrich}
spec:
  jsonata: {expression: '$merge([$, {"type": "order.enriched"}])'}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: summary}
spec:
  broker: orders
  subscriber: {ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: summary}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: summary-again}
spec:
  broker: orders
  filters: [{exact: {type: order.placed, source: /shop}}]
  subscriber: {ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: summary}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: enrich}
spec:
  broker: orders
  filter: {attributes: {type: order.placed}}
  subscriber: {ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: enrich}}
"""


def test_transforms_export_as_eventtransforms_valid_against_the_crd(tmp_path: Path) -> None:
    routeset = load_routes_text(TRANSFORMS, str(tmp_path / "routes.yaml"), env={})
    manifests, notes = to_knative(routeset, "shop", service_refs=True)
    assert_valid(manifests)
    assert notes == []
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert kinds == [
        ("Broker", "orders"),
        ("EventTransform", "own"),
        ("Trigger", "own"),
        ("EventTransform", "summary"),  # written once, for the two Triggers that use it
        ("Trigger", "summary"),
        ("Trigger", "summary-again"),
        ("EventTransform", "enrich"),
        ("Trigger", "enrich"),
    ]
    by = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    assert by["EventTransform", "summary"]["spec"] == {
        "jsonata": {
            "expression": '{"specversion": "1.0", "id": id, "source": source,\n "type": "order.summary"}\n'
        },
        "sink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "ledger"}, "uri": "summary"},
        "reply": {"jsonata": {"expression": '$merge([$, {"type": "order.booked"}])'}},
    }
    assert by["EventTransform", "enrich"]["spec"] == {
        "jsonata": {"expression": '$merge([$, {"type": "order.enriched"}])'}
    }  # no sink: Knative replies with the transformed event, into the broker
    assert by["EventTransform", "own"]["spec"]["sink"] == {"uri": "http://127.0.0.1:8082/own"}
    assert by["Trigger", "enrich"]["spec"]["subscriber"] == {
        "ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventTransform", "name": "enrich"}
    }
    # A block expression stays a block in the YAML written.
    assert '    expression: |\n      {"specversion"' in dump_stream(manifests)


def test_transforms_round_trip_through_the_loader(tmp_path: Path) -> None:
    routeset = load_routes_text(TRANSFORMS, str(tmp_path / "routes.yaml"), env={})
    manifests, _ = to_knative(routeset)
    again = load_routes_text(dump_stream(manifests), str(tmp_path / "again.yaml"), env={})
    for before, after in zip(routeset.routes, again.routes, strict=True):
        # A route's own transform comes back as the EventTransform of its name: same expression.
        assert replace(after, transform=None) == replace(before, transform=None)
        assert after.transform is not None and before.transform is not None
        assert (after.transform.expression, after.transform.reply, after.transform.reply_expression) == (
            before.transform.expression,
            before.transform.reply,
            before.transform.reply_expression,
        )


def test_eventtransform_crd_rejects_what_knative_would_prune() -> None:
    validator = crd_validator("EventTransform")
    good = {
        "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "EventTransform",
        "metadata": {"name": "t"},
        "spec": {"jsonata": {"expression": "$"}, "sink": {"uri": "http://x/"}},
    }
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({**good, "spec": {"jsonata": {"expr": "$"}}}))
    assert list(validator.iter_errors({**good, "apiVersion": "eventing.knative.dev/v1"}))


def test_dapr_export_names_a_transform_it_cannot_carry(tmp_path: Path) -> None:
    routeset = load_routes_text(TRANSFORMS, str(tmp_path / "routes.yaml"), env={})
    _, notes = to_dapr(routeset)
    assert [n for n in notes if "JSONata transform" in n][:1] == [
        "route 'own': a JSONata transform cannot be expressed in Dapr (Dapr delivers events as they "
        "were published; the app receives them untransformed and must reshape them itself)"
    ]
