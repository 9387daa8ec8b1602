"""Loading routes files: evroute and Knative documents, merge order, ${VAR}s, every problem with its line."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from evroute.errors import InvalidInput, RoutesInvalid
from evroute.routes.load import load_routes, load_routes_text
from evroute.routes.model import INGRESS_TOKEN_VARS, CircuitBreaker, Delivery, Subscriber

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT.parent / "shared" / "scenario.md"
SERVICES = """\
services:
  inventory-service: http://127.0.0.1:8081/
  payment-service: http://127.0.0.1:8082/
  inventory-dlq: http://127.0.0.1:8089/inventory
  payment-dlq: http://127.0.0.1:8089/payment
"""


def load(text: str, env: dict[str, str] | None = None, path: str = "routes.yaml"):  # type: ignore[no-untyped-def]
    return load_routes_text(textwrap.dedent(text), path, env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(RoutesInvalid) as info:
        load(text, env)
    return info.value.problems


def problem(text: str, env: dict[str, str] | None = None) -> str:
    found = problems(text, env)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- the scenario


def check_scenario_routes(rs) -> None:  # type: ignore[no-untyped-def]
    inventory, payment = rs.routes
    assert (inventory.name, inventory.broker) == ("inventory-trigger", "order-broker")
    assert inventory.subscriber == Subscriber(uri="http://127.0.0.1:8081/")
    assert inventory.filter == {"type": "order.placed"}
    assert inventory.delivery.retry == 3 and inventory.delivery.backoff_policy == "exponential"
    assert inventory.delivery.dead_letter_sink == Subscriber(uri="http://127.0.0.1:8089/inventory")
    assert payment.delivery.retry == 5
    assert payment.delivery.dead_letter_sink == Subscriber(uri="http://127.0.0.1:8089/payment")
    assert payment.matcher.matches({"type": "order.placed"})
    assert not payment.matcher.matches({"type": "order.cancelled"})


def test_the_scenario_knative_yaml_loads_verbatim() -> None:
    if not SCENARIO.exists():
        pytest.skip(f"the scenario document is not at {SCENARIO}")
    blocks = re.findall(r"```yaml\n(.*?)```", SCENARIO.read_text(encoding="utf-8"), re.S)
    knative = next(b for b in blocks if "kind: Broker" in b and "payment-trigger" in b)
    rs = load_routes_text(SERVICES + "---\n" + knative, "routes.yaml", {})
    check_scenario_routes(rs)


def test_the_example_routes_file_loads(tmp_path: Path) -> None:
    env = {"INVENTORY_PORT": "8081", "PAYMENT_PORT": "8082", "DLQ_PORT": "8089"}
    rs = load_routes(str(ROOT / "examples" / "order-fanout" / "routes.yaml"), env)
    assert [r.name for r in rs.routes] == ["inventory-trigger", "payment-trigger"]
    assert rs.routes[0].delivery.backoff_delay == 0.2  # defaults.delivery under the Trigger's own
    assert rs.notes == ()


# --------------------------------------------------------------------------- evroute documents


def test_a_full_evroute_route(tmp_path: Path) -> None:
    handler = tmp_path / "handle.sh"
    handler.write_text("#!/bin/sh\n")
    handler.chmod(0o755)
    rs = load_routes_text(
        textwrap.dedent("""\
            settings: {retention: P7D, durability: full, maxEventBytes: 2048}
            routes:
              - name: inventory
                broker: shop
                filters:
                  - exact: {type: order.placed}
                  - cesql: "subject LIKE 'eu-%'"
                subscriber: {command: ./handle.sh --fast}
                delivery:
                  retry: 0
                  backoffPolicy: linear
                  backoffDelay: 500ms
                  backoffMax: 2s
                  timeout: PT10S
                  retryAfterMax: PT0S
                  deadLetterSink: http://127.0.0.1:9/dlq
                  format: json
                  ordering: ordered
                  concurrency: 4
                  circuitBreaker: {consecutiveFailures: 5, cooldown: 30s}
                start: earliest
                paused: true
            """),
        str(tmp_path / "routes.yaml"),
        {},
    )
    (route,) = rs.routes
    assert route.subscriber == Subscriber(
        command=("./handle.sh", "--fast"), cwd=str(tmp_path), hidden_env=INGRESS_TOKEN_VARS
    )
    assert route.delivery == Delivery(
        retry=0,
        backoff_policy="linear",
        backoff_delay=0.5,
        backoff_max=2.0,
        timeout=10.0,
        retry_after_max=0.0,
        dead_letter_sink=Subscriber(uri="http://127.0.0.1:9/dlq"),
        format="json",
        ordering="ordered",
        concurrency=4,
        circuit_breaker=CircuitBreaker(consecutive_failures=5, cooldown=30.0),
    )
    assert (route.broker, route.start, route.paused, route.line) == ("shop", "earliest", True, 3)
    assert route.filters == ({"exact": {"type": "order.placed"}}, {"cesql": "subject LIKE 'eu-%'"})
    assert (rs.settings.retention, rs.settings.durability, rs.settings.max_event_bytes) == (
        604800.0,
        "full",
        2048,
    )
    assert rs.path == str(tmp_path / "routes.yaml")


def test_shorthands_and_builtin_defaults() -> None:
    rs = load("""\
        routes:
          - name: a
            subscriber: http://127.0.0.1:9/a
          - name: b
            subscriber: {command: [sh, -c, 'echo "$CE_ID"']}
          - name: c
            subscriber: {command: "sh -c 'exit 0'"}
            filter: {attributes: {type: x}}
        """)
    a, b, c = rs.routes
    assert a.subscriber.uri == "http://127.0.0.1:9/a" and a.broker == "default"
    assert a.delivery == Delivery() and a.start == "latest" and not a.paused
    assert b.subscriber.command == ("sh", "-c", 'echo "$CE_ID"')
    assert c.subscriber.command == ("sh", "-c", "exit 0")
    assert c.filter == {"type": "x"}  # Knative's spelling is accepted in evroute documents too


def test_bare_program_in_the_routes_folder_is_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "my-handler").write_text("#!/bin/sh\n")
    (tmp_path / "my-handler").chmod(0o755)
    rs = load_routes_text(
        "routes:\n  - {name: a, subscriber: {command: [my-handler, x]}}\n", str(tmp_path / "r.yaml"), {}
    )
    assert rs.routes[0].subscriber.command == (str(tmp_path / "my-handler"), "x")


def test_merge_order_builtin_defaults_broker_route_annotation() -> None:
    rs = load("""\
        defaults:
          delivery: {retry: 1, backoffDelay: 2s, timeout: 20s, concurrency: 8}
        routes:
          - name: plain
            subscriber: http://h/
          - name: on-broker
            broker: orders
            subscriber: http://h/
          - name: own
            broker: orders
            subscriber: http://h/
            delivery: {retry: 7}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Broker
        metadata: {name: orders}
        spec:
          delivery: {retry: 4, backoffPolicy: linear, timeout: PT5S}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata:
          name: trig
          annotations: {kafka.eventing.knative.dev/delivery.order: ordered}
        spec:
          broker: orders
          subscriber: {uri: http://h/}
          delivery: {retry: 9, ordering: unordered}
        """)
    d = {r.name: r.delivery for r in rs.routes}
    assert (d["plain"].retry, d["plain"].backoff_delay, d["plain"].timeout, d["plain"].backoff_policy) == (
        1,
        2.0,
        20.0,
        "exponential",
    )
    assert d["plain"].backoff_max == 60.0  # built-in where nobody says
    assert (d["on-broker"].retry, d["on-broker"].backoff_policy, d["on-broker"].timeout) == (4, "linear", 5.0)
    assert d["on-broker"].concurrency == 8  # defaults still apply under the broker's
    assert (d["own"].retry, d["own"].backoff_policy) == (7, "linear")
    assert (d["trig"].retry, d["trig"].ordering) == (9, "ordered")  # the annotation wins


# --------------------------------------------------------------------------- Knative documents


def test_knative_subscriber_forms_and_ignored_documents() -> None:
    rs = load_routes_text(
        SERVICES
        + textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: inventory-service}
        ---
        apiVersion: eventing.knative.dev/v1beta1
        kind: Trigger
        metadata: {name: old}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata:
          name: joined
          namespace: shop
          annotations: {evroute.dev/paused: "true", evroute.dev/start: earliest}
        spec:
          subscriber:
            ref: {apiVersion: v1, kind: Service, name: payment-service, namespace: shop}
            uri: /charge?x=1
          filters:
            - exact: {type: order.placed}
        status:
          subscriberUri: http://payment.shop.svc.cluster.local/
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {name: absolute}
        spec:
          brokerRef: {name: orders}
          subscriber: {uri: "https://example.com/hook"}
        """),
        "routes.yaml",
        {},
    )
    joined, absolute = rs.routes
    assert joined.subscriber.uri == "http://127.0.0.1:8082/charge?x=1"
    assert (joined.broker, joined.paused, joined.start) == ("default", True, "earliest")
    assert joined.matcher.description == "type=order.placed"
    assert (absolute.broker, absolute.subscriber.uri) == ("orders", "https://example.com/hook")
    assert rs.notes == (
        "routes.yaml:7: ignored document 'inventory-service' (kind: Service, apiVersion: v1); "
        "evroute reads eventing.knative.dev/v1 Trigger and Broker",
        "routes.yaml:11: ignored document 'old' (kind: Trigger, apiVersion: eventing.knative.dev/v1beta1); "
        "evroute reads eventing.knative.dev/v1 Trigger and Broker",
    )


def test_knative_problems() -> None:
    found = problems("""\
        services: {svc: http://127.0.0.1:1/}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {name: a}
        spec:
          subscriber: {ref: {kind: Service, name: ghost}}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {name: b}
        spec:
          subscriber: {ref: {name: svc}, uri: "http://other/"}
          filter: {type: x}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        spec: {}
        """)
    assert found == [
        "routes.yaml:7:43: route 'a': spec.subscriber.ref.name: service 'ghost' is not defined "
        "(add `ghost: http://…` under services:; known: svc)",
        "routes.yaml:13:39: route 'b': spec.subscriber.uri: 'http://other/' must be relative when ref is set "
        "(Knative joins it to the ref's URI)",
        "routes.yaml:14:12: route 'b': spec.filter: unknown key 'type' (allowed: attributes)",
        "routes.yaml:16:1: Trigger: metadata.name is required (the route name)",
    ]


# --------------------------------------------------------------------------- ${VAR} and secrets


def test_env_expansion_and_masking() -> None:
    env = {
        "TOKEN": "tok-123456",
        "HOST": "127.0.0.1:8081",
        "SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
    rs = load(
        """\
        routes:
          - name: a
            subscriber: http://${HOST}/in
            headers: {Authorization: "Bearer ${TOKEN}", X-Literal: "$${NOT_EXPANDED}"}
            signing: {secret: "${SECRET}"}
        """,
        env,
    )
    (route,) = rs.routes
    assert route.subscriber.uri == "http://127.0.0.1:8081/in"
    assert route.headers == {"Authorization": "Bearer tok-123456", "X-Literal": "${NOT_EXPANDED}"}
    assert route.signing_secret == env["SECRET"]
    # every header value is masked, the literal one too
    assert route.secrets == frozenset([*env.values(), "Bearer tok-123456", "${NOT_EXPANDED}"])
    assert route.mask("POST http://127.0.0.1:8081/in with tok-123456") == "POST http://***/in with ***"


def test_a_password_in_a_subscriber_uri_is_masked() -> None:
    rs = load(
        """\
        routes:
          - name: a
            subscriber: http://shop:pw-4711@127.0.0.1:8081/in
            delivery: {deadLetterSink: "https://ops:dls-0815@127.0.0.1:9/dead"}
          - {name: b, subscriber: {uris: ["http://u:grp-42@127.0.0.1:1/", "http://127.0.0.1:2/"]}}
        """
    )
    a, b = rs.routes
    assert a.mask(a.subscriber.describe()) == "http://shop:***@127.0.0.1:8081/in"
    assert a.delivery.dead_letter_sink is not None
    assert a.mask(a.delivery.dead_letter_sink.describe()) == "https://ops:***@127.0.0.1:9/dead"
    assert b.mask(b.subscriber.describe()) == "http://u:***@127.0.0.1:1/, http://127.0.0.1:2/"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROUTE_TEST_SINK", "http://127.0.0.1:7/")
    rs = load_routes_text("routes:\n  - {name: a, subscriber: '${EVROUTE_TEST_SINK}'}\n", "routes.yaml")
    assert rs.routes[0].subscriber.uri == "http://127.0.0.1:7/"


def test_unset_variable_is_a_problem_and_never_echoes_secrets() -> None:
    assert problem("routes:\n  - {name: a, subscriber: 'http://${NOPE}/'}\n") == (
        "routes.yaml:2:27: route 'a': subscriber: ${NOPE} is not set in the environment "
        "(export NOPE=…, or write $${NOPE} for the text itself)"
    )
    bad = problem(
        "routes:\n  - {name: a, subscriber: http://h/, signing: {secret: '${S}'}}\n", {"S": "hunter 22!"}
    )
    assert "hunter 22!" not in bad
    assert bad.endswith("signing.secret: not a Standard Webhooks secret (allowed: whsec_ followed by base64)")


# --------------------------------------------------------------------------- problems


def test_every_problem_at_once_with_line_and_column() -> None:
    found = problems("""\
        defaults:
          delivery: {retry: -1}
        settings:
          durability: fast
          maxEventBytes: 0
        routes:
          - name: Bad_Name
            subscriber: ftp://x/
          - name: a
            filtr: {type: x}
            subscriber: http://h/
            delivery:
              backoffPolicy: fibonacci
              backoffDelay: soon
              timeout: PT0S
              concurrency: 0
              format: xml
              ordering: fifo
              circuitBreaker: {consecutiveFailures: 0, cooldown: 1s}
            start: beginning
            paused: maybe
          - name: a
            subscriber: {command: [definitely-not-a-program-xyz]}
          - subscriber: http://h/
        """)
    assert found == [
        "routes.yaml:2:21: defaults.delivery.retry: must not be negative, got -1 (allowed: an integer >= 0)",
        "routes.yaml:4:15: settings.durability: unknown durability 'fast' (allowed: normal, full)",
        "routes.yaml:5:18: settings.maxEventBytes: must be at least 1, got 0 (allowed: an integer >= 1)",
        "routes.yaml:7:11: route 'Bad_Name': name: 'Bad_Name' is invalid "
        "(allowed: ^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-', at most 63 characters)",
        "routes.yaml:8:17: route 'Bad_Name': subscriber: 'ftp://x/' is not an absolute http(s) URI "
        "(allowed: http://HOST[:PORT]/PATH or https://…)",
        "routes.yaml:10:5: route 'a': unknown key 'filtr' (did you mean 'filter'? allowed: name, broker, "
        "filter, filters, subscriber, delivery, headers, signing, start, paused, transform, env)",
        "routes.yaml:13:22: route 'a': delivery.backoffPolicy: unknown policy 'fibonacci' (allowed: exponential, linear)",
        "routes.yaml:14:21: route 'a': delivery.backoffDelay: bad duration 'soon' "
        "(ISO 8601 like PT0.5S, PT1M, P1D, or 500ms, 2s, 1m, 1h, 1d)",
        "routes.yaml:15:16: route 'a': delivery.timeout: must be longer than zero, got 'PT0S'",
        "routes.yaml:16:20: route 'a': delivery.concurrency: must be at least 1, got 0 (allowed: an integer >= 1)",
        "routes.yaml:17:15: route 'a': delivery.format: unknown format 'xml' (allowed: binary, json)",
        "routes.yaml:18:17: route 'a': delivery.ordering: unknown ordering 'fifo' (allowed: unordered, ordered)",
        "routes.yaml:19:45: route 'a': delivery.circuitBreaker.consecutiveFailures: must be at least 1, got 0 "
        "(allowed: an integer >= 1)",
        "routes.yaml:20:12: route 'a': start: unknown start 'beginning' (allowed: latest, earliest)",
        "routes.yaml:21:13: route 'a': paused: must be true or false, got 'maybe'",
        "routes.yaml:22:11: route 'a': name: duplicate name (first at line 9; names must be unique in the file)",
        "routes.yaml:23:27: route 'a': subscriber.command: program 'definitely-not-a-program-xyz' not found "
        f"(allowed: a program on PATH, or a path relative to {os.getcwd()})",
        "routes.yaml:24:5: routes[3]: name is required (allowed: ^[a-z0-9][a-z0-9-]{0,62}$)",
    ]


def test_filter_problems_point_into_the_filter() -> None:
    found = problems("""\
        routes:
          - name: a
            subscriber: http://h/
            filter: {Type: x}
            filters:
              - exact: {type: ""}
              - prefix: {source: /x}
                suffix: {type: y}
              - cesql: "type = "
        """)
    assert found == [
        "routes.yaml:4:14: route 'a': filter: attribute name 'Type' is invalid "
        "(allowed: lowercase letters and digits, starting with a letter)",
        "routes.yaml:6:23: route 'a': filters[0].exact.type: empty value for 'type' (allowed: a non-empty string)",
        "routes.yaml:7:9: route 'a': filters[1]: more than one dialect in one filter: prefix, suffix "
        "(allowed: exactly one per item; combine them with all: [...])",
        "routes.yaml:9:16: route 'a': filters[2].cesql: CESQL: expected an expression but found end of "
        "expression at column 8 (allowed: CloudEvents SQL v1)",
    ]


def test_both_filter_and_filters_gives_a_note() -> None:
    rs = load("""\
        routes:
          - name: a
            subscriber: http://h/
            filter: {type: x}
            filters: [{exact: {type: y}}]
        """)
    assert rs.routes[0].matcher.matches({"type": "y"})
    assert rs.notes == (
        "routes.yaml:5: route 'a': both filter and filters are set; filters is used and filter is ignored",
    )


def test_multi_attribute_maps_load_and_empty_expressions_are_noted() -> None:
    rs = load("""\
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {name: t}
        spec:
          broker: default
          filters:
            - exact: {type: order.placed, source: /shop}
            - {}
            - any:
                - not: {}
          subscriber: {uri: http://h/}
        """)
    m = rs.routes[0].matcher
    assert m.matches({"type": "order.placed", "source": "/shop"})
    assert not m.matches({"type": "order.placed", "source": "/warehouse"})
    assert rs.notes == (
        "routes.yaml:8: route 't': spec.filters[1]: an empty expression is Knative's no filter "
        "(it lets every event through)",
        "routes.yaml:10: route 't': spec.filters[2].any[0].not: an empty expression is Knative's no "
        "filter (it lets every event through)",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes:\n  - name: a\n   subscriber: x\n", "routes.yaml:3:4: malformed YAML: did not find expected '-' indicator"),
        ("routes: [\n", "routes.yaml:2:1: malformed YAML: did not find expected node content"),
        ("routes:\n- name: a\n  name: b\n  subscriber: http://h/\n", "routes.yaml:3:3: duplicate key 'name' (first written at line 2; keep one)"),
        ("- 1\n", "routes.yaml:1:1: a document must be a mapping, got [1] (allowed: services/defaults/settings/routes, or a Knative Trigger or Broker)"),
        ("routes: {name: a}\n", "routes.yaml:1:9: routes: must be a list of routes (- name: …), got {'name': 'a'}"),
        ("route:\n  - name: a\n", "routes.yaml:1:1: unknown key 'route' (did you mean 'routes'? allowed: services, defaults, settings, routes)"),
        ("routes:\n  - name: a\n", "routes.yaml:2:5: route 'a': subscriber is required (allowed: a URI, {uri: …}, {command: […]} or {ref: …})"),
        ("routes:\n  - {name: a, subscriber: http://h/, broker: Orders}\n", "routes.yaml:2:46: route 'a': broker: 'Orders' is invalid (allowed: ^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-', at most 63 characters)"),
        ("routes:\n  - {name: a, subscriber: http://h/, delivery: {retry: three}}\n", "routes.yaml:2:56: route 'a': delivery.retry: must be an integer, got 'three' (allowed: an integer >= 0)"),
        ("routes:\n  - {name: a, subscriber: http://h/, delivery: {circuitBreaker: {cooldown: 1s}}}\n", "routes.yaml:2:65: route 'a': delivery.circuitBreaker: consecutiveFailures is required (allowed: {consecutiveFailures: N, cooldown: D})"),
        ("routes:\n  - {name: a, subscriber: relative/path}\n", "routes.yaml:2:27: route 'a': subscriber: 'relative/path' is not an absolute http(s) URI (allowed: http://HOST[:PORT]/PATH or https://…)"),
        ("settings: {retention: forever}\n", "routes.yaml:1:23: settings.retention: bad duration 'forever' (ISO 8601 like PT0.5S, PT1M, P1D, or 500ms, 2s, 1m, 1h, 1d)"),
        ("settings: {}\n---\nsettings: {}\n", "routes.yaml:3:1: 'settings' is set more than once (first at line 1; keep one)"),
    ],
)  # fmt: skip
def test_single_problems(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_the_message_of_routes_invalid_lists_every_problem() -> None:
    with pytest.raises(RoutesInvalid) as info:
        load("routes:\n  - {name: A, subscriber: x}\n")
    assert str(info.value).splitlines()[0] == "routes file has 2 problems:"
    assert info.value.exit_code == 2


def test_yaml_anchors_and_merge_keys() -> None:
    rs = load("""\
        routes:
          - &base {name: a, subscriber: http://h/, delivery: {retry: 1}}
          - <<: *base
            name: b
        """)
    assert [(r.name, r.delivery.retry) for r in rs.routes] == [("a", 1), ("b", 1)]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"routes file .*missing.yaml not found"):
        load_routes(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"routes:\n  - name: caf\xe9\n")
    with pytest.raises(RoutesInvalid) as info:
        load_routes(str(bad))
    assert info.value.problems == [f"{bad}:2:1: the file is not UTF-8 text (save it as UTF-8)"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert load_routes(str(empty)).routes == ()


def test_command_relative_to_the_routes_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    (folder / "handlers").mkdir(parents=True)
    script = folder / "handlers" / "inventory.py"
    script.write_text("print('ok')\n")
    text = f"routes:\n  - name: a\n    subscriber: {{command: [{sys.executable}, handlers/inventory.py]}}\n"
    rs = load_routes_text(text, str(folder / "routes.yaml"), {})
    assert rs.routes[0].subscriber.cwd == str(folder)
    rel = "routes:\n  - name: a\n    subscriber: {command: [handlers/inventory.py]}\n"
    with pytest.raises(RoutesInvalid) as info:  # exists, but not executable
        load_routes_text(rel, str(folder / "routes.yaml"), {})
    assert "program 'handlers/inventory.py' not found" in info.value.problems[0]
    script.chmod(0o755)
    assert load_routes_text(rel, str(folder / "routes.yaml"), {}).routes[0].subscriber.command == (
        "handlers/inventory.py",
    )


def test_routesets_compare_equal_when_nothing_changed() -> None:
    text = "routes:\n  - {name: a, subscriber: http://h/, filters: [{exact: {type: x}}]}\n"
    assert load(text) == load(text)
    assert load(text) != load(text.replace("type: x", "type: y"))


def test_env_allowlist_names_what_a_command_is_given() -> None:
    rs = load(
        """\
        routes:
          - name: a
            subscriber: {command: [cat]}
            env: [API_KEY, PATH]
          - name: b
            subscriber: {command: [cat]}
            headers: {X-Key: "${KEY}"}
        """,
        {"KEY": "key-123"},
    )
    a, b = rs.routes
    assert a.env == ("API_KEY", "PATH") and a.subscriber.env == ("API_KEY", "PATH")
    assert b.env is None and b.subscriber.env is None
    # every variable any route expands is kept from commands, and so is the ingress token
    assert a.subscriber.hidden_env == b.subscriber.hidden_env == {"KEY", "EVROUTE_TOKEN"}


def test_env_allowlist_problems_and_notes() -> None:
    assert problems(
        """\
        routes:
          - {name: a, subscriber: {command: [cat]}, env: API_KEY}
          - {name: b, subscriber: {command: [cat]}, env: [OK, 1X, "A-B"]}
        """
    ) == [
        "routes.yaml:2:50: route 'a': env: must be a list of variable names, got 'API_KEY' (allowed: [NAME, …])",
        "routes.yaml:3:55: route 'b': env[1]: '1X' is not a variable name (allowed: letters, digits, _)",
        "routes.yaml:3:59: route 'b': env[2]: 'A-B' is not a variable name (allowed: letters, digits, _)",
    ]
    rs = load("routes:\n  - {name: h, subscriber: 'http://127.0.0.1:1/', env: [X]}\n")
    assert rs.notes == ("routes.yaml:2: route 'h': env is ignored (it applies to command subscribers)",)


def test_every_header_value_is_a_secret_literal_or_expanded() -> None:
    rs = load(
        """\
        routes:
          - name: a
            subscriber: http://127.0.0.1:1/
            headers: {X-Literal: "plain-literal-value", X-Short: "ok", Authorization: "Bearer ${T}"}
        """,
        {"T": "tok-42"},
    )
    (route,) = rs.routes
    assert route.mask("sent plain-literal-value and Bearer tok-42") == "sent *** and ***"
    assert route.mask("ok") == "ok"  # too short to hide without garbling every line
