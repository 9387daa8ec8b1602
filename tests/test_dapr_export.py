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
