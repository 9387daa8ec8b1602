"""`export dapr` writes CEL back: Dapr Subscriptions round-trip, and `cel` filters become rules."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import celpy

from evroute.export.dapr import filter_to_cel, to_dapr
from evroute.routes.load import load_routes_text

SUBSCRIPTION = {
    "apiVersion": "dapr.io/v2alpha1",
    "kind": "Subscription",
    "metadata": {"name": "order-pub-sub"},
    "spec": {
        "pubsubname": "pubsub",
        "topic": "orders",
        "routes": {
            "rules": [
                {"match": 'event.type == "order.placed" && event.data.amount > 100', "path": "/orders/large"},
                {"match": 'event.type == "order.placed"', "path": "/orders/placed"},
            ],
            "default": "/orders",
        },
        "deadLetterTopic": "poison",
    },
    "scopes": ["order-processor"],
}


def test_dapr_subscription_round_trips_through_export(tmp_path: Path) -> None:
    text = "services: {order-processor: http://127.0.0.1:6001}\n---\n" + json.dumps(SUBSCRIPTION)
    rs = load_routes_text(text, str(tmp_path / "routes.yaml"))
    manifests, _ = to_dapr(rs)
    [sub] = [m for m in manifests if m["kind"] == "Subscription"]
    assert sub == SUBSCRIPTION
    # What is written back loads to the same routes.
    again = load_routes_text(
        "services: {order-processor: http://127.0.0.1:6001}\n---\n" + json.dumps(sub), "x.yaml"
    )
    assert [(r.name, r.filter, [(p.source, p.path) for p in r.subscriber.rules]) for r in again.routes] == [
        (r.name, r.filter, [(p.source, p.path) for p in r.subscriber.rules]) for r in rs.routes
    ]


def test_cel_filter_is_exported_as_a_rule_dapr_can_run(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        services: {shop: http://127.0.0.1:6001}
        routes:
          - name: large
            subscriber: http://127.0.0.1:6001/large
            filters:
              - exact: {type: order.placed}
              - cel: event.data.amount > 100
        """
    )
    rs = load_routes_text(text, str(tmp_path / "routes.yaml"))
    manifests, notes = to_dapr(rs)
    [sub] = [m for m in manifests if m["kind"] == "Subscription"]
    [rule] = sub["spec"]["routes"]["rules"]
    assert rule == {"match": 'event.type == "order.placed" && (event.data.amount > 100)', "path": "/large"}
    assert not [n for n in notes if "cel" in n]
    env = celpy.Environment()
    program = env.program(env.compile(rule["match"]))
    big = celpy.json_to_cel({"type": "order.placed", "data": {"amount": 150}})
    small = celpy.json_to_cel({"type": "order.placed", "data": {"amount": 50}})
    assert program.evaluate({"event": big}) is not False and bool(program.evaluate({"event": big}))
    assert not bool(program.evaluate({"event": small}))
    assert filter_to_cel({}, [{"not": {"cel": "event.data.x == 1"}}]) == ("!((event.data.x == 1))", [])


RESILIENCY = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    retries:
      forever: {policy: constant, duration: 2s}
  targets:
    components:
      pubsub: {inbound: {retry: forever}}
"""


def test_constant_and_forever_retries_are_exported_as_dapr_wrote_them(tmp_path: Path) -> None:
    text = (
        "services: {order-processor: http://127.0.0.1:6001}\n---\n"
        + json.dumps(SUBSCRIPTION)
        + "\n---\n"
        + RESILIENCY
    )
    manifests, notes = to_dapr(load_routes_text(text, str(tmp_path / "routes.yaml")))
    [res] = [m for m in manifests if m["kind"] == "Resiliency"]
    assert list(res["spec"]["policies"]["retries"].values()) == [
        {"policy": "constant", "duration": "2s", "maxRetries": -1}
    ]
    assert not [n for n in notes if "backoffDelay" in n]


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from evroute.cli import main

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode() + err.getvalue().decode()


def test_listing_shows_path_rules_and_editing_points_at_the_subscription(tmp_path: Path) -> None:
    sub = json.loads(json.dumps(SUBSCRIPTION))
    sub["scopes"] = ["order-processor", "audit"]
    text = "services: {order-processor: 'http://127.0.0.1:6001', audit: 'http://127.0.0.1:6002'}\n---\n"
    (tmp_path / "routes.yaml").write_text(text + json.dumps(sub))
    code, out = _cli(tmp_path, "subscribe", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [r["name"] for r in listed] == ["order-pub-sub-order-processor", "order-pub-sub-audit"]
    assert listed[0]["subscriber"]["rules"][-1] == {"match": None, "path": "/orders"}
    assert listed[0]["deadLetterTopic"] == "poison"
    for command in ("pause", "remove"):
        code, out = _cli(tmp_path, "subscribe", command, "order-pub-sub-audit")
        assert code == 2
        assert "comes from the Dapr Subscription 'order-pub-sub'" in out
    assert (tmp_path / "routes.yaml").read_text() == text + json.dumps(sub)
