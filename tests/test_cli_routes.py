"""`evroute routes check` and `evroute routes test` through the real entry point."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli as run

from evroute.cloudevent import make_event
from evroute.store import Store, cursors
from evroute.store import log as event_log


class Files:
    def __init__(self, tmp_path: Path, text: str) -> None:
        self.db = str(tmp_path / "ev.db")
        self.routes = tmp_path / "routes.yaml"
        self.routes.write_text(textwrap.dedent(text))

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        return run("--db", self.db, "--routes", str(self.routes), *args, input=stdin)


ROUTES = """\
    services:
      payment-service: http://127.0.0.1:8082/
    routes:
      - name: inventory
        filter: {type: order.placed}
        subscriber: http://127.0.0.1:8081/inventory?key=${INVENTORY_KEY}
        delivery: {retry: 5, deadLetterSink: http://127.0.0.1:8089/dlq}
        headers: {Authorization: "Bearer ${INVENTORY_KEY}"}
      - name: eu-orders
        filters:
          - prefix: {source: /shop/}
          - cesql: "subject LIKE 'eu-%'"
        subscriber: {command: [sh, -c, "cat > /dev/null"]}
        delivery: {ordering: ordered}
        paused: true
        start: earliest
    ---
    apiVersion: eventing.knative.dev/v1
    kind: Trigger
    metadata: {name: payment-trigger}
    spec:
      broker: order-broker
      filter: {attributes: {type: order.placed}, type: oops}
      subscriber: {ref: {name: payment-service}}
    """


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    monkeypatch.setenv("INVENTORY_KEY", "k-0123456789")
    return Files(tmp_path, ROUTES.replace(", type: oops", ""))


def test_check_prints_the_routes_masked_and_creates_cursors(files: Files) -> None:
    with Store(files.db) as store:
        event_log.append(store, "default", [make_event(type="t", id=f"e{i}") for i in range(3)])
    code, out, err = files.run("routes", "check")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert (
        lines[0]
        == f"{files.routes}: 3 routes, valid (durability normal, maxEventBytes 1048576, retention forever)"
    )
    assert lines[1].split() == ["name", "broker", "filter", "subscriber", "retry", "ordering", "paused"]
    assert "http://127.0.0.1:8081/inventory?key=***" in out and "k-0123456789" not in out
    assert lines[3].split() == [
        "inventory", "default", "type=order.placed", "http://127.0.0.1:8081/inventory?key=***",
        "5", "exponential", "PT1S", "+dls", "unordered/32",
    ]  # fmt: skip
    assert "eu-orders" in lines[4] and "source^=/shop/, cesql \"subject LIKE 'eu-%'\"" in lines[4]
    assert lines[4].split()[-2:] == ["ordered", "yes"]
    assert "new route inventory: cursor created (start: latest)" in out
    with Store(files.db) as store:
        assert cursors.get(store, "inventory").position == 3  # type: ignore[union-attr]
        assert cursors.get(store, "eu-orders").position == 0  # type: ignore[union-attr]
        assert cursors.get(store, "payment-trigger").broker == "order-broker"  # type: ignore[union-attr]
    code, out, _ = files.run("routes", "check")
    assert code == 0 and "cursor created" not in out  # only new routes get one


def test_check_json(files: Files) -> None:
    code, out, _ = files.run("routes", "check", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [r["name"] for r in doc["routes"]] == ["inventory", "eu-orders", "payment-trigger"]
    inventory = doc["routes"][0]
    assert inventory["subscriber"] == {"uri": "http://127.0.0.1:8081/inventory?key=***"}
    assert inventory["headers"] == {"Authorization": "***"}  # every header value, whole
    assert inventory["delivery"]["deadLetterSink"] == {"uri": "http://127.0.0.1:8089/dlq"}
    assert doc["settings"] == {"retention": None, "durability": "normal", "maxEventBytes": 1048576}
    assert doc["notes"] == [] and doc["new_routes"] == ["inventory", "eu-orders", "payment-trigger"]


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    files = Files(tmp_path, ROUTES.replace("retry: 5", "retry: -5"))
    code, out, err = files.run("routes", "check")
    assert (code, out) == (2, "")
    path = files.routes
    assert err.splitlines() == [
        "Error: routes file has 4 problems:",
        f"{path}:6:17: route 'inventory': subscriber: ${{INVENTORY_KEY}} is not set in the environment "
        "(export INVENTORY_KEY=…, or write $${INVENTORY_KEY} for the text itself)",
        f"{path}:7:23: route 'inventory': delivery.retry: must not be negative, got -5 (allowed: an integer >= 0)",
        f"{path}:8:30: route 'inventory': headers.Authorization: ${{INVENTORY_KEY}} is not set in the environment "
        "(export INVENTORY_KEY=…, or write $${INVENTORY_KEY} for the text itself)",
        f"{path}:23:46: route 'payment-trigger': spec.filter: unknown key 'type' (allowed: attributes)",
    ]
    assert not Path(files.db).exists()  # nothing was created for an invalid file


def test_check_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    files = Files(tmp_path, "routes:\n  - name: a\n   subscriber: x\n")
    code, _, err = files.run("routes", "check")
    assert code == 2
    assert (
        err
        == f"Error: routes file has 1 problem:\n{files.routes}:3:4: malformed YAML: did not find expected '-' indicator\n"
    )
    code, _, err = run("--db", files.db, "--routes", str(tmp_path / "nope.yaml"), "routes", "check")
    assert code == 2 and err.startswith(f"Error: routes file {tmp_path / 'nope.yaml'} not found")


def test_check_prints_notes(tmp_path: Path) -> None:
    files = Files(
        tmp_path,
        "routes:\n  - {name: a, subscriber: http://h/, filter: {type: x}, filters: [{cesql: 'true'}]}\n",
    )
    code, out, _ = files.run("routes", "check")
    assert code == 0
    assert out.splitlines()[-1] == (
        f"note: {files.routes}:2: route 'a': both filter and filters are set; filters is used and filter is ignored"
    )


def test_routes_test_with_flags(files: Files) -> None:
    code, out, err = files.run(
        "routes", "test", "--type", "order.placed", "--source", "/shop/eu", "--subject", "eu-1"
    )
    assert (code, err) == (0, "")
    rows = [line.split(None, 1) for line in out.splitlines()[2:]]
    assert rows == [["inventory", "matched"], ["eu-orders", "matched (paused: waits until resumed)"]]
    code, out, _ = files.run("routes", "test", "--type", "order.cancelled", "--source", "/web", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"route": "inventory", "matched": False, "failed_filter": "filter type: expected 'order.placed', got 'order.cancelled'"},
        {"route": "eu-orders", "matched": False, "failed_filter": "filters[0] prefix source: '/shop/', got '/web'"},
    ]  # fmt: skip


def test_routes_test_broker_and_extensions(files: Files) -> None:
    code, out, _ = files.run("routes", "test", "--type", "order.placed", "--broker", "order-broker", "--json")
    assert (code, json.loads(out)) == (
        0,
        [{"route": "payment-trigger", "matched": True, "failed_filter": None}],
    )
    code, out, _ = files.run("routes", "test", "--type", "x", "--broker", "nobody")
    assert (code, out) == (0, "no routes on broker 'nobody'\n")
    files.routes.write_text(
        "routes:\n  - {name: a, subscriber: http://h/, filters: [{exact: {tenant: acme}}]}\n"
    )
    code, out, _ = files.run("routes", "test", "--type", "x", "--ext", "tenant=acme", "--json")
    assert json.loads(out) == [{"route": "a", "matched": True, "failed_filter": None}]


def test_routes_test_with_an_event_file_and_stdin(files: Files, tmp_path: Path) -> None:
    event = tmp_path / "order.json"
    event.write_text(
        json.dumps({"type": "order.placed", "source": "/shop/eu", "subject": "eu-9", "data": {"n": 1}})
    )
    code, out, _ = files.run("routes", "test", str(event), "--json")
    assert code == 0 and [r["matched"] for r in json.loads(out)] == [True, True]
    code, out, _ = files.run("routes", "test", "-", "--json", stdin=json.dumps({"type": "order.placed"}))
    assert code == 0 and [r["matched"] for r in json.loads(out)] == [True, False]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Error: give an EVENT-FILE (structured CloudEvent JSON) or --type TYPE [--source S …]"),
        (("ev.json", "--type", "x"), "Error: give either EVENT-FILE or --type …, not both"),
        (("--type", "x", "--ext", "novalue"), "Error: --ext 'novalue' must be KEY=VALUE"),
        (("--type", "x", "--ext", "Bad=1"), "Error: attribute name 'Bad' is invalid (lower-case letters and digits, 1-20 characters)"),
    ],
)  # fmt: skip
def test_routes_test_refusals(files: Files, args: tuple[str, ...], message: str) -> None:
    code, _, err = files.run("routes", "test", *args)
    assert (code, err.strip()) == (2, message)


def test_routes_test_bad_event_file(files: Files, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code, _, err = files.run("routes", "test", str(bad))
    assert (code, err.strip()) == (2, f"Error: {bad}: expected one structured CloudEvent (a JSON object)")
    bad.write_text('{"type": 5}')
    code, _, err = files.run("routes", "test", str(bad))
    assert (code, err.strip()) == (2, f"Error: {bad}: attribute 'type' must be a non-empty string")
