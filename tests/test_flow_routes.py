"""routes.yaml: rateLimit, endpointCooldown, subscriber.uris and Knative PingSource documents;
their export to Knative and Dapr; `subscribe add --rate / --sink --sink`; `routes check`."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evroute.cli import main
from evroute.errors import RoutesInvalid
from evroute.export.dapr import to_dapr
from evroute.export.knative import to_knative
from evroute.routes.load import load_routes_text
from evroute.routes.model import RateLimit, Subscriber


def load(text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_routes_text(textwrap.dedent(text), "routes.yaml", env or {})


def problems(text: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as info:
        load(text)
    return info.value.problems


def test_rate_limit_and_endpoint_cooldown_load_and_merge() -> None:
    rs = load(
        """
        defaults:
          delivery: {rateLimit: {rate: 50, per: 1s}, endpointCooldown: 30s}
        routes:
          - name: a
            subscriber: http://127.0.0.1:9/
          - name: b
            subscriber: http://127.0.0.1:9/
            delivery: {rateLimit: {rate: 20, per: PT1M, burst: 1}}
          - name: c
            subscriber: http://127.0.0.1:9/
            delivery: {rateLimit: null}
        """
    )
    a, b, c = rs.routes
    assert a.delivery.rate_limit == RateLimit(rate=50, per=1.0, burst=50)  # burst defaults to rate
    assert a.delivery.endpoint_cooldown == 30.0
    assert b.delivery.rate_limit == RateLimit(rate=20, per=60.0, burst=1)
    assert c.delivery.rate_limit is None
    assert load("routes: [{name: d, subscriber: 'http://x/'}]").routes[0].delivery.endpoint_cooldown == 10.0


def test_rate_limit_problems_name_the_field() -> None:
    found = problems(
        """
        routes:
          - name: a
            subscriber: http://127.0.0.1:9/
            delivery:
              rateLimit: {rate: 0, per: 0s, burst: x}
          - name: e
            subscriber: http://127.0.0.1:9/
            delivery: {rateLimit: {rate: 1, every: 1s}}
          - name: b
            subscriber: http://127.0.0.1:9/
            delivery: {rateLimit: {per: 1s}}
          - name: c
            subscriber: http://127.0.0.1:9/
            delivery: {rateLimit: 5}
        """
    )
    text = "\n".join(found)
    assert "route 'e': delivery.rateLimit: unknown key 'every' (allowed: rate, per, burst)" in text
    assert "route 'a': delivery.rateLimit.rate: must be at least 1, got 0" in text
    assert "route 'a': delivery.rateLimit.per: must be longer than zero, got '0s'" in text
    assert "route 'a': delivery.rateLimit.burst: must be an integer, got 'x'" in text
    assert "route 'b': delivery.rateLimit: rate is required (allowed: {rate: N, per: D, burst: M})" in text
    assert "route 'c': delivery.rateLimit: must be a mapping ({rate: N, per: D, burst: M}), got 5" in text


def test_subscriber_uris_are_a_consumer_group() -> None:
    rs = load(
        """
        routes:
          - name: orders
            subscriber: {uris: ["http://127.0.0.1:8081/", "http://127.0.0.1:8082/${P}"]}
        """,
        {"P": "orders"},
    )
    sub = rs.routes[0].subscriber
    assert sub == Subscriber(uris=("http://127.0.0.1:8081/", "http://127.0.0.1:8082/orders"))
    assert sub.endpoints == sub.uris and sub.uri is None
    assert sub.describe() == "http://127.0.0.1:8081/, http://127.0.0.1:8082/orders"


def test_subscriber_uris_problems() -> None:
    found = problems(
        """
        routes:
          - name: a
            subscriber: {uris: []}
          - name: b
            subscriber: {uris: ["http://x/", "ftp://y/", "http://x/"]}
          - name: c
            subscriber: {uris: ["http://x/"], uri: "http://y/"}
          - name: d
            subscriber: http://x/
            delivery: {deadLetterSink: {uris: ["http://x/"]}}
        """
    )
    text = "\n".join(found)
    assert "route 'a': subscriber.uris: must be a list of URIs, got []" in text
    assert "route 'b': subscriber.uris[1]: 'ftp://y/' is not an absolute http(s) URI" in text
    assert "route 'b': subscriber.uris[2]: 'http://x/' is listed twice (each endpoint once)" in text
    assert "route 'c': subscriber: both uris and uri/command/ref are set (allowed: one of them)" in text
    assert "route 'd': delivery.deadLetterSink: unknown key 'uris'" in text


PING = """
services:
  display: http://127.0.0.1:8090/
routes:
  - name: audit
    filter: {type: dev.knative.sources.ping}
    subscriber: http://127.0.0.1:8081/
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: heartbeat, namespace: shop}
spec:
  schedule: "*/5 * * * *"
  timezone: Europe/Berlin
  contentType: application/json
  data: '{"beat": true}'
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
  ceOverrides: {extensions: {team: ops}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: direct}
spec:
  dataBase64: AAEC
  sink: {ref: {apiVersion: v1, kind: Service, name: display}, uri: ping}
"""


def test_pingsources_load_with_broker_and_uri_sinks() -> None:
    rs = load(PING)
    heartbeat, direct = rs.sources
    assert heartbeat.name == "heartbeat" and heartbeat.namespace == "shop"
    assert heartbeat.schedule == "*/5 * * * *" and heartbeat.timezone == "Europe/Berlin"
    assert heartbeat.data == b'{"beat": true}' and heartbeat.content_type == "application/json"
    assert heartbeat.broker == "default" and heartbeat.uri is None
    assert dict(heartbeat.extensions) == {"team": "ops"}
    assert heartbeat.source == "/apis/v1/namespaces/shop/pingsources/heartbeat"
    assert direct.schedule == "* * * * *"  # Knative's default: every minute
    assert direct.data == b"\x00\x01\x02" and direct.base64
    assert direct.uri == "http://127.0.0.1:8090/ping" and direct.namespace == "default"
    # The uri sink is delivered by a route of its own, on a broker of its own.
    made = rs.get("pingsource-direct")
    assert made is not None and made.broker == "pingsource-direct" and made.pingsource == "direct"
    assert made.subscriber.uri == "http://127.0.0.1:8090/ping"
    assert [r.name for r in rs.routes] == ["audit", "pingsource-direct"]


def test_pingsource_problems_have_lines() -> None:
    found = problems(
        """
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {name: bad}
        spec:
          schedule: "61 * * * *"
          timezone: Mars/Olympus
          data: x
          dataBase64: eA==
          sink: {command: [echo]}
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {name: worse}
        spec:
          schedule: "* * * *"
          sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: Not_A_Name}}
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {name: nosink}
        spec: {jsonData: "{}"}
        """
    )
    assert found == [
        "routes.yaml:6:3: pingsource 'bad': spec: both data and dataBase64 are set (allowed: one of them)",
        "routes.yaml:6:13: pingsource 'bad': spec.schedule: '61 * * * *': not a valid cron schedule",
        "routes.yaml:7:13: pingsource 'bad': spec.timezone: 'Mars/Olympus': unknown time zone "
        "(allowed: an IANA name such as Europe/Berlin or UTC)",
        "routes.yaml:10:9: pingsource 'bad': spec.sink: must be a Broker ref or an http(s) uri "
        "(a PingSource cannot run a command)",
        "routes.yaml:16:13: pingsource 'worse': spec.schedule: '* * * *': a cron schedule has 5 fields "
        "(minute hour day month weekday), got 4",
        "routes.yaml:17:73: pingsource 'worse': spec.sink.ref.name: 'Not_A_Name' is invalid (allowed: "
        "^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-', at most 63 characters)",
        "routes.yaml:22:7: pingsource 'nosink': spec.sink: sink is required (a Broker ref, or a uri)",
        "routes.yaml:22:8: pingsource 'nosink': spec: unknown key 'jsonData' (allowed: schedule, "
        "timezone, contentType, data, dataBase64, sink, ceOverrides)",
    ]


def test_pingsource_route_name_clash_is_refused() -> None:
    found = problems(
        """
        routes:
          - name: pingsource-tick
            subscriber: http://x/
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {name: tick}
        spec: {sink: {uri: "http://y/"}}
        """
    )
    assert found == [
        "routes.yaml:6:1: pingsource 'tick': its sink is delivered by route 'pingsource-tick', which "
        "the file also defines (line 3); rename one"
    ]


def test_knative_export_writes_pingsources_back_and_loads_the_same() -> None:
    rs = load(PING)
    manifests, notes = to_knative(rs)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert ("PingSource", "heartbeat") in kinds and ("PingSource", "direct") in kinds
    assert ("Trigger", "pingsource-direct") not in kinds and ("Broker", "pingsource-direct") not in kinds
    heartbeat = next(m for m in manifests if m["metadata"]["name"] == "heartbeat")
    assert heartbeat == {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {"name": "heartbeat", "namespace": "shop"},
        "spec": {
            "schedule": "*/5 * * * *",
            "timezone": "Europe/Berlin",
            "contentType": "application/json",
            "data": '{"beat": true}',
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
            "ceOverrides": {"extensions": {"team": "ops"}},
        },
    }
    direct = next(m for m in manifests if m["metadata"]["name"] == "direct")
    assert direct["spec"]["dataBase64"] == base64.b64encode(b"\x00\x01\x02").decode()
    back = load_routes_text(yaml.safe_dump_all(manifests), "back.yaml", {})
    assert back.sources == rs.sources
    assert notes == []


def test_exports_say_what_uris_and_rate_limits_cannot_be() -> None:
    rs = load(
        """
        routes:
          - name: orders
            subscriber: {uris: ["http://127.0.0.1:8081/", "http://127.0.0.1:8082/"]}
            delivery: {rateLimit: {rate: 50, per: 1s}}
        """
    )
    manifests, notes = to_knative(rs)
    trigger = next(m for m in manifests if m["kind"] == "Trigger")
    assert trigger["spec"]["subscriber"] == {"uri": "http://127.0.0.1:8081/"}
    assert any(
        "route 'orders': subscriber.uris (2 endpoints) cannot be expressed in Knative (a Trigger has "
        "one subscriber; exported with the first (http://127.0.0.1:8081/)" in n
        for n in notes
    ), notes
    assert any(
        "rateLimit: {rate: 50, per: PT1S, burst: 50} cannot be expressed in Knative" in n for n in notes
    )
    manifests, notes = to_dapr(rs)
    assert any("subscriber.uris (2 endpoints) cannot be expressed in Dapr" in n for n in notes), notes
    assert any("middleware.http.ratelimit" in n for n in notes), notes


def test_dapr_export_names_the_pingsources_it_cannot_carry() -> None:
    manifests, notes = to_dapr(load(PING))
    assert not any(m["metadata"]["name"] == "pingsource-direct" for m in manifests)
    assert any(
        n.startswith("pingsource 'heartbeat': a PingSource cannot be expressed in Dapr") for n in notes
    )


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_subscribe_add_rate_and_several_sinks(tmp_path: Path) -> None:
    code, _out, err = run(
        tmp_path, "subscribe", "add", "orders", "--sink", "http://127.0.0.1:8081/",
        "--sink", "http://127.0.0.1:8082/", "--rate", "50/s",
    )  # fmt: skip
    assert code == 0, err
    rs = load((tmp_path / "routes.yaml").read_text())
    route = rs.routes[0]
    assert route.subscriber.uris == ("http://127.0.0.1:8081/", "http://127.0.0.1:8082/")
    assert route.delivery.rate_limit == RateLimit(rate=50, per=1.0, burst=50)
    assert "rateLimit: {rate: 50, per: 1s}" in (tmp_path / "routes.yaml").read_text()
    code, _out, err = run(tmp_path, "subscribe", "add", "slow", "--sink", "http://x/", "--rate", "10/PT1M")
    assert code == 0, err
    assert load((tmp_path / "routes.yaml").read_text()).routes[1].delivery.rate_limit == RateLimit(
        10, 60.0, 10
    )


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("fast", "--rate 'fast' is not N/DURATION (like 50/s, 1000/1m or 5/PT10S)"),
        ("0/s", "--rate '0/s': the count must be at least 1"),
        ("5/0s", "--rate '5/0s': the duration must be longer than zero"),
        ("5/x", "--rate '5/x' is not N/DURATION (like 50/s, 1000/1m or 5/PT10S)"),
    ],
)
def test_subscribe_add_refuses_a_bad_rate(tmp_path: Path, rate: str, message: str) -> None:
    code, _out, err = run(tmp_path, "subscribe", "add", "x", "--sink", "http://x/", "--rate", rate)
    assert code == 2
    assert err.strip() == f"Error: {message}"
    assert not (tmp_path / "routes.yaml").exists()


def test_subscribe_add_refuses_several_sinks_with_a_command(tmp_path: Path) -> None:
    code, _out, err = run(tmp_path, "subscribe", "add", "x", "--sink", "http://x/", "--command", "true")
    assert (code, err.strip()) == (2, "Error: give exactly one of --sink URL or --command CMD")


def test_routes_check_lists_sources_with_their_next_fire_time(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(PING)
    code, out, err = run(tmp_path, "routes", "check")
    assert code == 0, err
    assert "pingsource heartbeat: */5 * * * * (Europe/Berlin) -> broker default, next at " in out
    assert "pingsource direct: * * * * * (UTC) -> http://127.0.0.1:8090/ping, next at " in out
    code, out, err = run(tmp_path, "routes", "check", "--json")
    import json

    doc = json.loads(out)
    names = [s["name"] for s in doc["sources"]]
    assert names == ["heartbeat", "direct"]
    assert doc["sources"][0]["next"].endswith(":00.000Z") and doc["sources"][0]["sink"] == {
        "broker": "default"
    }
