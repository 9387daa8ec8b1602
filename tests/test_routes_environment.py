"""Routes that need the environment (``${VAR}``, a command on PATH) only where events are delivered.

Every command reads the structure of the routes file (names, brokers, start, filters); only
the worker and `routes check` expand variables and look programs up, and they say which
variable is missing. A shell that lacks one route's variable can still publish (the new
route's cursor is created) and edit or list the other routes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli

from evroute.errors import RoutesInvalid
from evroute.routes.load import load_routes, load_routes_text
from evroute.store import Store, cursors

ROUTES = """\
routes:
  - name: orders
    filter: {type: order.placed}
    subscriber: http://127.0.0.1:9/orders
  - name: billing
    broker: billing
    start: earliest
    subscriber: "http://${BILLING_HOST}/in"
    headers: {Authorization: "Bearer ${BILLING_TOKEN}"}
    signing: {secret: "${BILLING_SECRET}"}
  - name: mailer
    filter: {type: order.shipped}
    subscriber: {command: [no-such-mailer-program, --send]}
"""
NEEDED = ("BILLING_HOST", "BILLING_TOKEN", "BILLING_SECRET")


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for var in NEEDED:
        monkeypatch.delenv(var, raising=False)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    return routes, tmp_path / "ev.db"


def run(files: tuple[Path, Path], *args: str) -> tuple[int, str, str]:
    routes, db = files
    return run_cli("--db", str(db), "--routes", str(routes), *args)


def test_structure_loads_without_the_environment() -> None:
    rs = load_routes_text(ROUTES, "routes.yaml", {}, resolve=False)
    assert not rs.resolved
    assert [(r.name, r.broker, r.start) for r in rs.routes] == [
        ("orders", "default", "latest"),
        ("billing", "billing", "earliest"),
        ("mailer", "default", "latest"),
    ]
    billing = rs.get("billing")
    assert billing is not None and billing.subscriber.uri == "http://${BILLING_HOST}/in"
    mailer = rs.get("mailer")
    assert mailer is not None and mailer.subscriber.command == ("no-such-mailer-program", "--send")
    assert mailer.matcher.explain({"type": "order.shipped"}) is None


def test_structure_is_the_same_whatever_the_environment() -> None:
    env = {"BILLING_HOST": "10.0.0.1", "BILLING_TOKEN": "tok-123", "BILLING_SECRET": "whsec_c2VjcmV0"}
    with_env = load_routes_text(ROUTES, "r.yaml", env, resolve=False)
    without = load_routes_text(ROUTES, "r.yaml", {}, resolve=False)
    for a, b in zip(with_env.routes, without.routes, strict=True):
        assert (a.name, a.broker, a.start, a.filter, a.filters) == (
            b.name,
            b.broker,
            b.start,
            b.filter,
            b.filters,
        )
    # a variable that is set is expanded and masked as usual
    billing = with_env.get("billing")
    assert billing is not None and billing.mask(billing.subscriber.describe()) == "http://***/in"


def test_structure_problems_are_found_without_the_environment() -> None:
    bad = ROUTES.replace("start: earliest", "start: oldest").replace("${BILLING_TOKEN}", "${1x}")
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text(bad, "routes.yaml", {}, resolve=False)
    assert caught.value.problems == [
        "routes.yaml:7:12: route 'billing': start: unknown start 'oldest' (allowed: latest, earliest)",
        "routes.yaml:9:30: route 'billing': headers.Authorization: ${1x} is not a variable name "
        "(allowed: ${NAME} with letters, digits, _)",
    ]


def test_delivering_still_needs_the_variables_and_the_program() -> None:
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text(ROUTES, "routes.yaml", {})
    problems = [p.split(": ", 3)[-1] for p in caught.value.problems]
    assert problems[:3] == [
        f"${{{var}}} is not set in the environment (export {var}=…, or write $${{{var}}} for the text itself)"
        for var in NEEDED
    ]
    assert problems[3].startswith("program 'no-such-mailer-program' not found (allowed: a program on PATH")
    assert len(problems) == 4


def test_publish_without_a_routes_variable_still_creates_every_cursor(files: tuple[Path, Path]) -> None:
    code, _, err = run(files, "publish", "--type", "order.placed", "--source", "/shop")
    assert (code, err) == (0, "")
    code, _, err = run(files, "publish", "--broker", "billing", "--type", "invoice.due", "--source", "/b")
    assert (code, err) == (0, "")
    with Store(str(files[1])) as store:
        found = {name: (c.broker, c.position) for name, c in cursors.all_cursors(store).items()}
    # billing starts at the earliest event, so its cursor was made before its broker's first event
    assert found == {"orders": ("default", 0), "billing": ("billing", 0), "mailer": ("default", 0)}


def test_subscribe_add_pause_list_ignore_another_routes_variable(files: tuple[Path, Path]) -> None:
    code, _, err = run(files, "subscribe", "add", "audit", "--sink", "http://127.0.0.1:9/audit")
    assert (code, err) == (0, "")
    assert run(files, "subscribe", "pause", "orders")[0] == 0
    code, out, err = run(files, "subscribe", "list", "--json")
    assert (code, err) == (0, "")
    listed = {r["name"]: r for r in json.loads(out)}
    assert set(listed) == {"orders", "billing", "mailer", "audit"}
    assert listed["orders"]["paused"] is True
    assert run(files, "subscribe", "remove", "audit")[0] == 0
    assert "audit" not in files[0].read_text()


def test_routes_test_ignores_another_routes_variable(files: tuple[Path, Path]) -> None:
    code, out, err = run(files, "routes", "test", "--type", "order.placed", "--source", "/shop", "--json")
    assert (code, err) == (0, "")
    assert [r["route"] for r in json.loads(out) if r["matched"]] == ["orders"]


def test_routes_check_names_the_missing_variable(files: tuple[Path, Path]) -> None:
    code, out, err = run(files, "routes", "check")
    assert (code, out) == (2, "")
    assert "route 'billing': subscriber: ${BILLING_HOST} is not set in the environment" in err
    assert "route 'mailer': subscriber.command: program 'no-such-mailer-program' not found" in err


def test_the_worker_refuses_to_start_without_the_variable(files: tuple[Path, Path]) -> None:
    code, _, err = run(files, "worker", "--once")
    assert code == 2
    assert "${BILLING_HOST} is not set in the environment (export BILLING_HOST=…" in err


def test_load_routes_resolves_by_default(files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_HOST", "127.0.0.1:9")
    monkeypatch.setenv("BILLING_TOKEN", "tok-123456")
    monkeypatch.setenv("BILLING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    text = textwrap.dedent(ROUTES).replace("no-such-mailer-program", "cat")
    files[0].write_text(text)
    rs = load_routes(str(files[0]))
    assert rs.resolved
    billing = rs.get("billing")
    assert billing is not None and billing.subscriber.uri == "http://127.0.0.1:9/in"
