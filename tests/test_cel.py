"""The cel filter dialect: CEL over attributes and JSON data, as Dapr evaluates its rules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from evroute.cli import main
from evroute.cloudevent import CloudEvent, make_event
from evroute.errors import RoutesInvalid
from evroute.filters import compile_filters
from evroute.filters.cel import Cel, CelSyntaxError, event_view
from evroute.routes.load import load_routes_text


def order(data: object, ct: str | None = "application/json", **ext: str) -> CloudEvent:
    raw = data if isinstance(data, bytes) else None if data is None else json.dumps(data).encode()
    return make_event(type="order.placed", source="/shop", data=raw, datacontenttype=ct, extensions=ext)


def matches(expr: str, event: CloudEvent) -> bool:
    return compile_filters({}, [{"cel": expr}]).matches_event(event)


@pytest.mark.parametrize(
    ("expr", "data", "want"),
    [
        ("event.data.amount > 100", {"amount": 150.5}, True),
        ("event.data.amount > 100", {"amount": 101}, True),
        ("event.data.amount > 100.5", {"amount": 101}, True),  # int vs double, as cel-go
        ("event.data.amount == 100", {"amount": 100.0}, True),
        ("event.data.amount == 100.0", {"amount": 100}, True),
        ("event.data.amount != 100", {"amount": 100.0}, False),
        ("event.data.amount <= 99.5", {"amount": 99}, True),
        ("event.data.amount > 100", {"amount": 100}, False),
        ("event.data.items.size() == 2", {"items": [1, 2]}, True),
        ("event.data.customer.tier == 'gold'", {"customer": {"tier": "gold"}}, True),
        ("'eu' in event.data.regions", {"regions": ["us", "eu"]}, True),
        ("event.type == 'order.placed' && event.source == '/shop'", {}, True),
        # Missing fields: no match, never a crash; has() tests presence as in Dapr's docs.
        ("event.data.amount > 100", {"total": 500}, False),
        ("has(event.data.amount) && event.data.amount > 100", {"total": 500}, False),
        ("!has(event.data.amount)", {"total": 500}, True),
        ("event.missing == 'x'", {}, False),
        # Type mismatch and errors: no match.
        ("event.data.amount > 100", {"amount": "500"}, False),
        ("event.data.amount / 0 > 1", {"amount": 5}, False),
        # Not a boolean: no match.
        ("event.data.amount", {"amount": 5}, False),
        ("event.type", {}, False),
    ],
)
def test_cel_edge_cases(expr: str, data: object, want: bool) -> None:
    assert matches(expr, order(data)) is want


def test_cel_non_json_data_is_text_and_field_access_does_not_match() -> None:
    text = order(b"plain words", ct="text/plain")
    assert event_view(text)["data"] == "plain words"
    assert matches("event.data == 'plain words'", text)
    assert not matches("event.data.amount > 1", text)
    broken = order(b"{not json", ct="application/json")
    assert not matches("event.data.amount > 1", broken)
    assert matches("event.data.startsWith('{not')", broken)
    binary = order(b"\xff\x00\x01", ct="application/octet-stream")
    assert not matches("has(event.data)", binary)
    none = order(None, ct=None)
    assert not matches("event.data.amount > 1", none)
    assert matches("!has(event.data)", none)


def test_cel_sees_extensions_and_explains_the_failing_part() -> None:
    m = compile_filters({}, [{"exact": {"type": "order.placed"}}, {"cel": "event.data.amount > 100"}])
    event = order({"amount": 5}, tenant="acme")
    assert not m.matches_event(event)
    assert m.explain_event(event) == 'filters[1] cel "event.data.amount > 100" (false)'
    missing = order({"other": 1})
    why = m.explain_event(missing)
    assert why is not None and why.startswith('filters[1] cel "event.data.amount > 100" (evaluation error:')
    assert "missing" in why
    assert matches("event.tenant == 'acme'", event)


def test_cel_inside_any_and_not() -> None:
    m = compile_filters({}, [{"any": [{"exact": {"type": "x"}}, {"not": {"cel": "event.data.amount < 10"}}]}])
    assert m.needs_event
    assert m.matches_event(order({"amount": 50}))
    assert not m.matches_event(order({"amount": 5}))


def test_cel_compile_error_is_a_load_error_with_its_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        routes:
          - name: large
            subscriber: http://127.0.0.1:1/
            filters:
              - cel: "event.data.amount >"
        """
    )
    with pytest.raises(RoutesInvalid) as info:
        load_routes_text(text, "routes.yaml")
    [problem] = info.value.problems
    assert problem.startswith("routes.yaml:5:")
    assert "route 'large': filters[0].cel: CEL does not parse" in problem
    with pytest.raises(CelSyntaxError):
        Cel("event.(")


def test_dapr_rule_compile_error_names_its_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        services: {app: http://127.0.0.1:1}
        ---
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata: {name: orders}
        spec:
          pubsubname: pubsub
          topic: orders
          routes:
            rules:
              - match: event.type ==
                path: /x
        scopes: [app]
        """
    )
    with pytest.raises(RoutesInvalid) as info:
        load_routes_text(text, "routes.yaml")
    [problem] = info.value.problems
    assert problem.startswith("routes.yaml:11:")
    assert "spec.routes.rules[0].match: CEL does not parse" in problem


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode() + err.getvalue().decode()


def test_subscribe_add_cel_and_routes_test_shows_the_failing_part(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes: []\n")
    code, out = _cli(
        tmp_path, "subscribe", "add", "large", "--sink", "http://127.0.0.1:9/", "--filter", "type=order.placed",
        "--cel", "event.data.amount > 100",
    )  # fmt: skip
    assert code == 0, out
    text = (tmp_path / "routes.yaml").read_text()
    assert '- cel: "event.data.amount > 100"' in text
    (tmp_path / "small.json").write_text(
        json.dumps({"type": "order.placed", "source": "/s", "id": "1", "data": {"amount": 5}})
    )
    code, out = _cli(tmp_path, "routes", "test", str(tmp_path / "small.json"), "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "route": "large",
            "matched": False,
            "failed_filter": 'filters[1] cel "event.data.amount > 100" (false)',
        }
    ]
    (tmp_path / "big.json").write_text(
        json.dumps({"type": "order.placed", "source": "/s", "id": "2", "data": {"amount": 500}})
    )
    code, out = _cli(tmp_path, "routes", "test", str(tmp_path / "big.json"), "--json")
    assert json.loads(out)[0]["matched"] is True
    code, out = _cli(tmp_path, "subscribe", "add", "bad", "--sink", "http://127.0.0.1:9/", "--cel", "event.(")
    assert code == 2 and "Error: --cel: CEL does not parse" in out


def test_cel_is_not_imported_for_a_plain_publish_or_a_route_without_cel(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - {name: a, subscriber: 'http://127.0.0.1:9/', filters: [{cesql: \"type = 'x'\"}]}\n"
    )
    code = (
        "import sys\n"
        "from evroute.cli import main\n"
        f"try:\n    main(['--db', {str(tmp_path / 'ev.db')!r}, '--routes', {str(tmp_path / 'routes.yaml')!r}, "
        "'publish', '--type', 't', '--topic', 'orders'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "from evroute.routes.load import load_routes\n"
        f"load_routes({str(tmp_path / 'routes.yaml')!r})\n"
        "assert 'celpy' not in sys.modules, 'celpy loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
