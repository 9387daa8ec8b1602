"""`evroute subscribe add|list|remove|pause|resume|reset` through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli

from evroute.cloudevent import make_event
from evroute.routes.load import load_routes
from evroute.store import Store, cursors, deadletters, pace, retries
from evroute.store import log as event_log
from evroute.store.deadletters import NewDeadLetter
from evroute.store.retries import Retry

ROOT = Path(__file__).resolve().parents[1]

ROUTES = """\
# the shop's routes
routes:
  # inventory first
  - name: inventory
    filter: {type: order.placed}
    subscriber: http://127.0.0.1:8081/
    headers: {Authorization: "Bearer ${SHOP_TOKEN}"}
    signing: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: payment-trigger
spec:
  subscriber: {uri: "http://127.0.0.1:8082/"}
"""


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.db = str(tmp_path / "ev.db")
        self.routes = tmp_path / "routes.yaml"
        self.routes.write_text(ROUTES)

    def run(self, *args: str) -> tuple[int, str, str]:
        return run_cli("--db", self.db, "--routes", str(self.routes), *args)

    def publish(self, n: int) -> None:
        with Store(self.db) as store:
            event_log.append(
                store, "default", [make_event(type="order.placed", id=f"e{i}") for i in range(n)]
            )

    def cursor(self, name: str) -> int | None:
        with Store(self.db) as store:
            found = cursors.get(store, name)
        return None if found is None else found.position


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("SHOP_TOKEN", "tok-secret-42")
    return Env(tmp_path)


def test_add_writes_the_route_and_creates_its_cursor_at_latest(env: Env) -> None:
    env.publish(4)
    code, out, err = env.run(
        "subscribe",
        "add",
        "notification",
        "--sink",
        "http://127.0.0.1:8083/",
        "--filter",
        "type=order.placed",
    )
    assert (code, err) == (0, "")
    assert out == (
        f"added route notification to {env.routes}: broker default, filter type=order.placed "
        "-> http://127.0.0.1:8083/ (starts at latest)\n"
    )
    assert env.routes.read_text() == ROUTES.replace(
        "    signing: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n",
        "    signing: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n"
        "  - name: notification\n"
        "    filter: {type: order.placed}\n"
        "    subscriber: http://127.0.0.1:8083/\n",
    )
    assert env.cursor("notification") == 4
    assert env.cursor("inventory") == 4  # every route seen for the first time gets its cursor


def test_add_with_every_flag(env: Env) -> None:
    script = env.tmp / "audit.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o755)
    env.publish(2)
    code, _, err = env.run(
        "subscribe", "add", "audit", "--command", "./audit.sh --verbose", "--broker", "shop",
        "--filter", "type=order.placed", "--filter", "region=", "--cesql", "subject LIKE 'eu-%'",
        "--retry", "0", "--backoff-policy", "linear", "--backoff-delay", "500ms", "--timeout", "PT5S",
        "--dead-letter", "http://127.0.0.1:8089/dlq", "--ordered", "--concurrency", "4", "--from", "earliest",
    )  # fmt: skip
    assert (code, err) == (0, "")
    route = load_routes(str(env.routes)).by_name()["audit"]
    assert route.broker == "shop" and route.start == "earliest"
    assert route.subscriber.command == ("./audit.sh", "--verbose") and route.subscriber.cwd == str(env.tmp)
    assert route.filters == (
        {"exact": {"type": "order.placed"}},
        {"cesql": "EXISTS region AND region <> ''"},
        {"cesql": "subject LIKE 'eu-%'"},
    )
    d = route.delivery
    assert (d.retry, d.backoff_policy, d.backoff_delay, d.timeout, d.ordering, d.concurrency) == (
        0,
        "linear",
        0.5,
        5.0,
        "ordered",
        4,
    )
    assert d.dead_letter_sink is not None and d.dead_letter_sink.uri == "http://127.0.0.1:8089/dlq"
    assert env.cursor("audit") == 0


def test_add_with_an_env_allowlist(env: Env) -> None:
    code, _, err = env.run(
        "subscribe",
        "add",
        "audit",
        "--command",
        "cat",
        "--env",
        "API_KEY",
        "--env",
        "PATH",
        "--env",
        "API_KEY",
    )
    assert (code, err) == (0, "")
    assert "    env: [API_KEY, PATH]\n" in env.routes.read_text()
    route = load_routes(str(env.routes)).by_name()["audit"]
    assert route.env == ("API_KEY", "PATH") and route.subscriber.env == ("API_KEY", "PATH")
    code, out, _ = env.run("subscribe", "list", "--json")
    listed = {r["name"]: r for r in json.loads(out)}
    assert listed["audit"]["env"] == ["API_KEY", "PATH"] and listed["inventory"]["env"] is None


def test_add_refuses_a_duplicate_name(env: Env) -> None:
    for name in ("inventory", "payment-trigger"):
        code, out, err = env.run("subscribe", "add", name, "--sink", "http://127.0.0.1:1/")
        assert (code, out) == (2, "")
        assert err.startswith(f"Error: route '{name}' already exists in {env.routes}")
    assert env.routes.read_text() == ROUTES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Bad_Name", "--sink", "http://h/"), "Error: NAME 'Bad_Name' is invalid (allowed: ^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-', at most 63 characters)"),
        (("n",), "Error: give exactly one of --sink URL or --command CMD"),
        (("n", "--sink", "http://h/", "--command", "true"), "Error: give exactly one of --sink URL or --command CMD"),
        (("n", "--sink", "ftp://h/"), "Error: --sink 'ftp://h/' is not an absolute http(s) URL (like http://127.0.0.1:8081/)"),
        (("n", "--command", "no-such-program-xyz"), "Error: --command: program 'no-such-program-xyz' not found (on PATH, or relative to {folder})"),
        (("n", "--sink", "http://h/", "--timeout", "soon"), "Error: --timeout: bad duration 'soon' (ISO 8601 like PT0.5S, PT1M, P1D, or 500ms, 2s, 1m, 1h, 1d)"),
        (("n", "--sink", "http://h/", "--filter", "Type=x"), "Error: --filter 'Type=x' must be KEY=VALUE with a lowercase attribute name, like type=order.placed"),
        (("n", "--sink", "http://h/", "--cesql", "type ="), "Error: --cesql: CESQL: expected an expression but found end of expression at column 7"),
        (("n", "--sink", "http://h/", "--dead-letter", "dlq"), "Error: --dead-letter 'dlq' is not an absolute http(s) URL"),
        (("n", "--sink", "http://h/", "--broker", "Shop"), "Error: --broker 'Shop' is invalid (allowed: ^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-')"),
        (("n", "--sink", "http://h/", "--env", "API_KEY"), "Error: --env applies to --command subscribers only (an HTTP subscriber gets no environment)"),
        (("n", "--command", "true", "--env", "1X"), "Error: --env '1X' is not a variable name (allowed: letters, digits and _, not starting with a digit)"),
    ],
)  # fmt: skip
def test_add_names_the_bad_flag(env: Env, args: tuple[str, ...], message: str) -> None:
    code, _, err = env.run("subscribe", "add", *args)
    assert (code, err.strip()) == (2, message.replace("{folder}", str(env.tmp)))
    assert env.routes.read_text() == ROUTES


def test_click_checks_numbers_and_choices(env: Env) -> None:
    code, _, err = env.run("subscribe", "add", "n", "--sink", "http://h/", "--retry", "-1")
    assert code == 2 and "Invalid value for '--retry'" in err
    code, _, err = env.run("subscribe", "add", "n", "--sink", "http://h/", "--backoff-policy", "fibonacci")
    assert code == 2 and "Invalid value for '--backoff-policy'" in err
    assert env.routes.read_text() == ROUTES


def test_list_masks_secrets(env: Env) -> None:
    code, out, _ = env.run("subscribe", "list")
    assert code == 0
    assert "tok-secret-42" not in out and "whsec_" not in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["inventory", "payment-trigger"]
    code, out, _ = env.run("subscribe", "list", "--json")
    routes = json.loads(out)
    assert routes[0]["headers"] == {"Authorization": "***"}  # every header value, whole
    assert routes[0]["signing"] == {"secret": "***"}
    assert routes[1] == {
        "name": "payment-trigger",
        "broker": "default",
        "filter": {},
        "filters": [],
        "subscriber": {"uri": "http://127.0.0.1:8082/"},
        "delivery": {
            "retry": 3,
            "backoffPolicy": "exponential",
            "backoffDelay": "PT1S",
            "backoffMax": "PT1M",
            "timeout": "PT30S",
            "retryAfterMax": "PT1M",
            "deadLetterSink": None,
            "format": "binary",
            "ordering": "unordered",
            "concurrency": 32,
            "circuitBreaker": None,
            "rateLimit": None,
            "endpointCooldown": "PT10S",
        },
        "headers": {},
        "signing": None,
        "start": "latest",
        "paused": False,
        "env": None,
    }


def test_remove_keeps_the_cursor_and_purge_drops_everything(env: Env) -> None:
    env.run("subscribe", "add", "notification", "--sink", "http://127.0.0.1:8083/")
    code, out, _ = env.run("subscribe", "remove", "notification")
    assert (code, out) == (
        0,
        f"removed route notification from {env.routes} (its cursor is kept: adding it back resumes)\n",
    )
    assert env.routes.read_text() == ROUTES
    assert env.cursor("notification") == 0
    with Store(env.db) as store:
        event = make_event(type="order.placed", id="x1")
        event_log.append(store, "default", [event])
        retries.schedule(store, [Retry("inventory", 1, 1, 9e9, 0.0, 503, "down", None)])
        deadletters.add(
            store,
            [NewDeadLetter(route="inventory", broker="default", seq=None, event=event, attempts=4, status=503,
                           reason="retries exhausted", error="down", body=b"", first_failed_at=0.0, dead_at=1.0)],
        )  # fmt: skip
        assert store.conn.execute("SELECT count(*) FROM retries WHERE route = 'inventory'").fetchone()[0] == 1
        pace.put(store, [pace.RoutePace("inventory", True, None, 1.0)])
    code, out, _ = env.run("subscribe", "remove", "inventory", "--purge")
    assert code == 0
    assert (
        out
        == f"removed route inventory from {env.routes} and purged its cursor, scheduled retries and dead letters\n"
    )
    with Store(env.db) as store:
        assert cursors.get(store, "inventory") is None
        assert pace.get(store, "inventory") is None
        assert store.conn.execute("SELECT count(*) FROM retries WHERE route = 'inventory'").fetchone()[0] == 0
        assert (
            store.conn.execute("SELECT count(*) FROM dead_letters WHERE route = 'inventory'").fetchone()[0]
            == 0
        )
    # A route already gone from the file can still be purged from the database.
    code, out, _ = env.run("subscribe", "remove", "notification", "--purge")
    assert (code, out) == (0, "purged route notification: its cursor, scheduled retries and dead letters\n")
    code, _, err = env.run("subscribe", "remove", "notification", "--purge")
    assert (code, err) == (2, f"Error: route 'notification' is neither in {env.routes} nor in the database\n")
    code, _, err = env.run("subscribe", "remove", "ghost")
    assert (code, err) == (2, f"Error: route 'ghost' is not in {env.routes} (see `evroute subscribe list`)\n")


def test_pause_and_resume(env: Env) -> None:
    code, out, _ = env.run("subscribe", "pause", "inventory")
    assert (code, out) == (0, "route inventory paused\n")
    assert "    paused: true\n---" in env.routes.read_text()
    assert env.run("subscribe", "pause", "inventory")[1] == "route inventory was already paused\n"
    assert env.run("subscribe", "pause", "payment-trigger")[0] == 0
    assert 'evroute.dev/paused: "true"' in env.routes.read_text()
    assert all(r.paused for r in load_routes(str(env.routes)).routes)
    assert env.run("subscribe", "resume", "inventory")[1] == "route inventory resumed\n"
    assert env.run("subscribe", "resume", "payment-trigger")[1] == "route payment-trigger resumed\n"
    assert env.run("subscribe", "resume", "inventory")[1] == "route inventory was not paused\n"
    assert env.routes.read_text() == ROUTES
    code, _, err = env.run("subscribe", "pause", "ghost")
    assert code == 2 and err.startswith("Error: route 'ghost' is not in")


def test_reset(env: Env) -> None:
    env.publish(5)
    assert env.run("routes", "check")[0] == 0
    assert env.cursor("inventory") == 5
    code, out, _ = env.run("subscribe", "reset", "inventory", "--to", "earliest")
    assert (code, out) == (
        0,
        "route inventory: cursor at seq 0; the next event delivered is the first after it\n",
    )
    assert env.run("subscribe", "reset", "inventory", "--to", "3")[0] == 0
    assert env.cursor("inventory") == 2
    assert env.run("subscribe", "reset", "inventory", "--to", "latest")[0] == 0
    assert env.cursor("inventory") == 5
    assert env.run("subscribe", "reset", "inventory", "--to", "2000-01-01T00:00:00Z")[0] == 0
    assert env.cursor("inventory") == 0
    code, _, err = env.run("subscribe", "reset", "inventory", "--to", "yesterday")
    assert code == 2 and err.startswith("Error: bad --to 'yesterday'")
    code, _, err = env.run("subscribe", "reset", "ghost", "--to", "earliest")
    assert code == 2 and err.startswith("Error: route 'ghost' has no cursor yet")


def test_reset_creates_the_cursor_of_a_route_never_seen(env: Env) -> None:
    env.publish(3)
    assert env.run("subscribe", "reset", "payment-trigger", "--to", "earliest")[0] == 0
    assert env.cursor("payment-trigger") == 0


def test_add_then_remove_as_processes_round_trips_a_commented_file(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    original = textwrap.dedent("""\
        # header
        routes:   # the list
            - name: a    # four-space items
              subscriber: http://127.0.0.1:1/
        # footer
        """)
    routes.write_text(original)
    base = [sys.executable, "-m", "evroute", "--db", str(tmp_path / "ev.db"), "--routes", str(routes)]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    added = subprocess.run(
        [*base, "subscribe", "add", "b", "--sink", "http://127.0.0.1:2/", "--retry", "5"],
        env=environ,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    assert (
        "    - name: b\n      subscriber: http://127.0.0.1:2/\n      delivery:\n        retry: 5\n# footer"
        in (routes.read_text())
    )
    duplicate = subprocess.run(
        [*base, "subscribe", "add", "b", "--sink", "http://h/"], env=environ, capture_output=True
    )
    assert duplicate.returncode == 2
    removed = subprocess.run([*base, "subscribe", "remove", "b"], env=environ, capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert routes.read_text() == original
