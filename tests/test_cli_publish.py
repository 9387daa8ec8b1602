"""`evroute init` and `evroute publish`: through the real entry point (one error path), with a
real database file; every refusal is checked for its exact message, its exit code, and a
database left as it was."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli as run

from evroute import tracing
from evroute.eventfile import MAX_PROBLEMS
from evroute.publish import CHUNK, RoutesConfig, publish_file, routes_config
from evroute.store import Store, cursors
from evroute.store import log as event_log

ROOT = Path(__file__).resolve().parents[1]


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "ev.db"
        self.routes = tmp_path / "routes.yaml"

    def __call__(self, *args: str, input: bytes | str | None = None) -> tuple[int, str, str]:
        return run("--db", str(self.db), "--routes", str(self.routes), *args, input=input)

    def events(self) -> list[event_log.StoredEvent]:
        if not self.db.exists():
            return []
        with Store(str(self.db)) as s:
            return event_log.read_after(s, "default", 0, limit=100_000) + [
                e for b in ("order-broker", "audit") for e in event_log.read_after(s, b, 0, limit=100_000)
            ]

    def count(self) -> int:
        with Store(str(self.db)) as s:
            return int(s.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def write_routes(self, text: str) -> None:
        self.routes.write_text(textwrap.dedent(text))

    def jsonl(self, name: str, objs: list[object]) -> Path:
        path = self.dir / name
        path.write_text("".join(json.dumps(o) + "\n" for o in objs))
        return path


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def ce(i: int | str, **kw: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": str(i), "source": "/shop", "type": "order.placed", **kw}


# --------------------------------------------------------------------------- init


def test_init_writes_the_example_and_creates_the_database(env: Env) -> None:
    from evroute.routes.load import load_routes

    code, out, err = env("init")
    assert (code, err) == (0, "")
    assert out == (
        f"wrote {env.routes}: routes inventory and payment on order.placed (edit it)\n"
        f"database {env.db} created\n"
    )
    routeset = load_routes(str(env.routes))
    assert [(r.name, r.broker, dict(r.filter)) for r in routeset.routes] == [
        ("inventory", "default", {"type": "order.placed"}),
        ("payment", "default", {"type": "order.placed"}),
    ]
    assert routeset.settings.max_event_bytes == 1_048_576
    text = env.routes.read_text()
    assert text.count("\n#") > 10  # a commented example, not just data
    with Store(str(env.db), create=False) as s:
        assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_init_never_overwrites(env: Env) -> None:
    env.routes.write_text("# mine\nroutes: []\n")
    code, out, _ = env("init")
    assert code == 0
    assert out == f"{env.routes} exists, left as is\ndatabase {env.db} created\n"
    assert env.routes.read_text() == "# mine\nroutes: []\n"
    code, out, _ = env("init")
    assert (code, out) == (0, f"{env.routes} exists, left as is\ndatabase {env.db} ready\n")


def test_init_then_publish_creates_the_routes_cursors_before_the_event(env: Env) -> None:
    env("init")
    code, out, err = env("publish", "--type", "order.placed", "--id", "o-1", "--data", '{"order": 1}')
    assert (code, out, err) == (0, "stored o-1 seq 1\n", "")
    with Store(str(env.db)) as s:
        positions = {name: c.position for name, c in cursors.all_cursors(s).items()}
    assert positions == {"inventory": 0, "payment": 0}  # so seq 1 is delivered to both


# --------------------------------------------------------------------------- one event


def test_publish_defaults(env: Env) -> None:
    code, out, err = env("publish", "--type", "order.placed", "--data", '{"order": 1, "sku": "A-1"}')
    assert code == 0 and err == ""
    [stored] = env.events()
    event = stored.event
    assert out == f"stored {event.id} seq 1\n"
    assert len(event.id) == 36 and event.source == "/evroute/cli" and event.type == "order.placed"
    assert event.datacontenttype == "application/json"
    assert event.data == b'{"order": 1, "sku": "A-1"}'  # as given, byte for byte
    assert event.time is not None and event.time.endswith("Z")
    assert stored.broker == "default"
    assert "evroutehops" not in event.attributes


def test_publish_every_option(env: Env) -> None:
    code, out, _ = env(
        "publish",
        "--type",
        "order.placed",
        "--source",
        "/shop",
        "--id",
        "o-7",
        "--subject",
        "eu-7",
        "--time",
        "2026-01-02T15:04:05Z",
        "--dataschema",
        "https://shop.example/order.json",
        "--ext",
        "tenant=acme",
        "--ext",
        "priority=5",
        "--ext",
        "note=a=b",
        "--broker",
        "order-broker",
    )
    assert (code, out) == (0, "stored o-7 seq 1\n")
    [stored] = env.events()
    assert stored.broker == "order-broker"
    attrs = dict(stored.event.attributes)
    assert tracing.parse(attrs.pop("traceparent")) is not None  # given a trace at publish
    assert attrs == {
        "specversion": "1.0",
        "id": "o-7",
        "source": "/shop",
        "type": "order.placed",
        "subject": "eu-7",
        "time": "2026-01-02T15:04:05Z",
        "dataschema": "https://shop.example/order.json",
        "tenant": "acme",
        "priority": "5",  # --ext values stay strings
        "note": "a=b",
    }
    assert stored.event.data is None and stored.event.datacontenttype is None


def test_publish_data_from_a_file_stdin_and_as_text(env: Env) -> None:
    blob = env.dir / "blob.bin"
    blob.write_bytes(b"\x00\x01\xffbinary")
    assert (
        env(
            "publish",
            "--type",
            "a",
            "--id",
            "1",
            "--data",
            f"@{blob}",
            "--datacontenttype",
            "application/octet-stream",
        )[0]
        == 0
    )
    assert env("publish", "--type", "a", "--id", "2", "--data", "-", input=b"[1, 2]\n")[0] == 0
    assert (
        env("publish", "--type", "a", "--id", "3", "--data", "not json", "--datacontenttype", "text/plain")[0]
        == 0
    )
    events = {e.event.id: e.event for e in env.events()}
    assert events["1"].data == b"\x00\x01\xffbinary"
    assert (events["2"].data, events["2"].datacontenttype) == (b"[1, 2]\n", "application/json")
    assert (events["3"].data, events["3"].datacontenttype) == (b"not json", "text/plain")


def test_duplicate_is_reported_and_not_stored(env: Env) -> None:
    assert env("publish", "--type", "a", "--id", "o-1", "--source", "/shop")[1] == "stored o-1 seq 1\n"
    code, out, err = env("publish", "--type", "b", "--id", "o-1", "--source", "/shop")
    assert (code, out, err) == (
        0,
        "duplicate o-1 (source /shop, broker default): already stored, nothing written\n",
        "",
    )
    # Identity is (broker, source, id): another broker stores it.
    assert env("publish", "--type", "a", "--id", "o-1", "--source", "/shop", "--broker", "audit")[0] == 0
    assert [(e.broker, e.event.type) for e in env.events()] == [("default", "a"), ("audit", "a")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/s"], "--type is required (the event type, e.g. --type order.placed), or use --file"),
        (
            ["--type", "a", "--data", "{oops"],
            "--data: not valid JSON (Expecting property name enclosed in double quotes at column 2); "
            "to publish other content, name its type, e.g. --datacontenttype text/plain",
        ),
        (
            ["--type", "a", "--data", "hello", "--datacontenttype", "application/json"],
            "--data: not valid JSON (Expecting value at column 1) but --datacontenttype application/json says it is; "
            "fix the data or name its type, e.g. --datacontenttype text/plain",
        ),
        (
            ["--type", "a", "--data", "{}", "--datacontenttype", "application/vnd.shop+json; v=2"],
            None,  # valid: +json with parameters
        ),
        (
            ["--type", "a", "--ext", "Tenant=x"],
            "--ext name 'Tenant' is invalid: CloudEvents extension names are lower-case letters a-z and digits 0-9, "
            "1-20 characters",
        ),
        (
            ["--type", "a", "--ext", "my-ext=x"],
            "--ext name 'my-ext' is invalid: CloudEvents extension names are lower-case letters a-z and digits 0-9, "
            "1-20 characters",
        ),
        (
            ["--type", "a", "--ext", "a" * 21 + "=x"],
            f"--ext name '{'a' * 21}' is invalid: CloudEvents extension names are lower-case letters a-z and "
            "digits 0-9, 1-20 characters",
        ),
        (["--type", "a", "--ext", "tenant"], "--ext 'tenant' is not KEY=VALUE (e.g. --ext tenant=acme)"),
        (
            ["--type", "a", "--ext", "subject=x"],
            "--ext name 'subject' is a core attribute: use --subject instead",
        ),
        (["--type", "a", "--ext", "data=x"], "--ext name 'data' is a core attribute: use --data instead"),
        (
            ["--type", "a", "--ext", "specversion=0.3"],
            "--ext name 'specversion' is a core attribute: evroute publishes 1.0 only",
        ),
        (["--type", "a", "--ext", "t=1", "--ext", "t=2"], "--ext 't' is given twice"),
        (["--type", "a", "--time", "now"], "attribute 'time' must be an RFC 3339 timestamp, got 'now'"),
        (["--type", "a", "--source", ""], "attribute 'source' must be a non-empty string"),
        (
            ["--type", "a", "--datacontenttype", "json"],
            "attribute 'datacontenttype' must be a media type like application/json, got 'json'",
        ),
        (
            ["--type", "a", "--dataschema", "order.json"],
            "attribute 'dataschema' must be an absolute URI, got 'order.json'",
        ),
        (
            ["--type", "a", "--broker", "Orders"],
            "--broker 'Orders' is not a broker name (lower-case letters, digits and '-', starting with a letter or "
            "digit, at most 63 characters)",
        ),
        (
            ["--type", "a", "--data", "@/no/such/file"],
            "--data @/no/such/file: cannot read the file (No such file or directory)",
        ),
        (
            ["--type", "a", "--file", "x.jsonl"],
            "--file takes every attribute from the file: --type cannot be combined with it",
        ),
        (
            ["--type", "a", "--url", "http://127.0.0.1:9/", "--broker", "b"],
            "--broker does not apply with --url: the URL's path names the broker (http://HOST:PORT/BROKER)",
        ),
    ],
)
def test_bad_options_store_nothing(env: Env, args: list[str], message: str | None) -> None:
    code, out, err = env("publish", *args)
    if message is None:
        assert code == 0, err
        return
    assert (code, out, err) == (2, "", f"Error: {message}\n")
    assert not env.db.exists()  # not even created


def test_non_utf8_data_declared_json_is_refused(env: Env) -> None:
    blob = env.dir / "latin1.json"
    blob.write_bytes(b'{"name": "caf\xe9"}')
    code, _, err = env("publish", "--type", "a", "--data", f"@{blob}")
    assert (code, err) == (
        2,
        "Error: --data: not valid JSON (not valid UTF-8); to publish other content, name its type, "
        "e.g. --datacontenttype text/plain\n",
    )
    assert not env.db.exists()


def test_oversized_event_is_refused_and_nothing_changes(env: Env) -> None:
    env.write_routes("settings:\n  maxEventBytes: 300\n")
    assert env("publish", "--type", "a", "--id", "small")[0] == 0
    big = json.dumps({"pad": "x" * 400})
    when = "2026-01-02T15:04:05Z"
    code, out, err = env(
        "publish", "--type", "a", "--source", "/s", "--id", "big", "--time", when, "--data", big
    )
    assert (code, out) == (2, "")
    attrs = {"specversion": "1.0", "id": "big", "source": "/s", "type": "a", "time": when}
    attrs["datacontenttype"] = "application/json"
    size = len(big) + sum(len(k) + len(v) for k, v in attrs.items())
    assert (
        err
        == f"Error: event is {size} bytes, over maxEventBytes 300 (settings.maxEventBytes in the routes file)\n"
    )
    assert [e.event.id for e in env.events()] == ["small"]


def test_database_that_cannot_be_written_is_a_runtime_fault(env: Env, tmp_path: Path) -> None:
    code, out, err = run("--db", str(tmp_path), "--routes", str(env.routes), "publish", "--type", "a")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: cannot open database '{tmp_path}': unable to open database file (check the path and its permissions)\n"
    )
    missing = tmp_path / "no" / "such" / "ev.db"
    code, _, err = run("--db", str(missing), "publish", "--type", "a")
    assert code == 1
    assert err == f"Error: cannot create database '{missing}': folder '{missing.parent}' does not exist\n"


# --------------------------------------------------------------------------- the routes file


def test_missing_routes_file_is_silent_and_invalid_one_warns(env: Env) -> None:
    assert env("publish", "--type", "a")[2] == ""
    env.write_routes(
        """\
        routes:
          - name: Bad Name
            subscriber: ftp://x
        """
    )
    code, out, err = env("publish", "--type", "a", "--id", "2")
    assert (code, out) == (0, "stored 2 seq 2\n")
    assert (
        err
        == f"Warning: routes file '{env.routes}': 2 problems (see `evroute routes check`); event stored anyway\n"
    )
    path = env.jsonl("many.jsonl", [ce(1), ce(2)])
    code, out, err = env("publish", "--file", str(path))
    assert (code, out) == (0, "stored 2, duplicates 0\n")
    assert err.endswith("; events stored anyway\n")


def test_new_route_starts_after_the_events_before_it_and_the_cache_follows_edits(env: Env) -> None:
    env("publish", "--type", "a", "--id", "1")
    env("publish", "--type", "a", "--id", "2")
    env.write_routes(
        """\
        routes:
          - name: first
            subscriber: http://127.0.0.1:9/
        """
    )
    env("publish", "--type", "a", "--id", "3")
    with Store(str(env.db)) as s:
        assert cursors.get(s, "first").position == 2  # type: ignore[union-attr]
        [(key, cached)] = s.conn.execute("SELECT path, config FROM routes_cache").fetchall()
    assert RoutesConfig.from_text(cached).routes == (("first", "default", "latest"),)  # type: ignore[union-attr]
    # Keyed with the format's tag: an evroute that kept JSON under the bare path finds no row of it.
    assert key == "2:" + os.path.abspath(env.routes)
    # Editing the file (here: same size is not enough to fool it, the mtime moves) is seen at once.
    env.write_routes(
        """\
        settings: {maxEventBytes: 100}
        routes:
          - name: first
            subscriber: http://127.0.0.1:9/
          - name: second
            subscriber: http://127.0.0.1:9/
            start: earliest
        """
    )
    os.utime(env.routes, ns=(1, 1_000_000_000))
    env("publish", "--type", "a", "--id", "4")
    code, _, err = env("publish", "--type", "a", "--id", "5", "--data", json.dumps("x" * 200))
    assert code == 2 and "over maxEventBytes 100" in err
    with Store(str(env.db)) as s:
        assert {n: c.position for n, c in cursors.all_cursors(s).items()} == {"first": 2, "second": 0}


def test_routes_config_reads_settings(env: Env) -> None:
    env.write_routes(
        """\
        settings: {durability: full, maxEventBytes: 2048}
        routes:
          - name: r
            broker: order-broker
            subscriber: http://127.0.0.1:9/
            start: earliest
        """
    )
    config = routes_config(str(env.routes))
    assert (config.routes, config.durability, config.max_event_bytes, config.warning) == (
        (("r", "order-broker", "earliest"),),
        "full",
        2048,
        None,
    )
    assert routes_config(str(env.dir / "absent.yaml")) == routes_config(str(env.dir / "absent.yaml"))
    assert routes_config(str(env.dir / "absent.yaml")).warning is None


def test_single_publish_imports_nothing_heavy(env: Env) -> None:
    """Start-up time is measured in bench/publish.py; this guards the cause: what gets imported."""
    env.write_routes("routes:\n  - name: r\n    subscriber: http://127.0.0.1:9/\n")
    script = textwrap.dedent(
        f"""
        import sys
        from evroute.cli import main
        try:
            main(["--db", {str(env.db)!r}, "--routes", {str(env.routes)!r}, "publish", "--type", "a"])
        except SystemExit:
            pass
        heavy = {{"yaml", "ruamel", "aiohttp", "httpx", "tabulate", "sqlite_utils", "watchdog", "prometheus_client"}}
        print(sorted({{m.split(".")[0] for m in sys.modules}} & heavy))
        """
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, check=True
    )
    assert "stored" in first.stdout  # the first run creates the database and reads the routes file
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, check=True
    )
    assert second.stdout.splitlines()[-1] == "[]", second.stdout


# --------------------------------------------------------------------------- files


def test_publish_json_lines(env: Env) -> None:
    path = env.dir / "orders.jsonl"
    lines = [json.dumps(ce(i, data={"order": i})) for i in range(5)]
    path.write_text("\ufeff" + "\n\n".join(lines) + "\n   \n")  # BOM, blank lines
    code, out, err = env("publish", "--file", str(path), "--broker", "order-broker")
    assert (code, out, err) == (0, "stored 5, duplicates 0\n", "")
    stored = env.events()
    assert [(e.broker, e.event.id, e.event.data) for e in stored] == [
        ("order-broker", str(i), f'{{"order":{i}}}'.encode()) for i in range(5)
    ]
    code, out, _ = env("publish", "--file", str(path), "--broker", "order-broker")
    assert (code, out) == (0, "stored 0, duplicates 5\n")


def test_publish_json_array_and_stdin(env: Env) -> None:
    body = json.dumps(
        [
            ce(1, datacontenttype="text/plain", data="hello"),
            ce(2, data_base64="AAE="),
            ce(3, tenant="acme", n=5, ok=True),
            ce(3),  # a duplicate inside the file
        ],
        indent=2,
    )
    code, out, err = env("publish", "--file", "-", input=body)
    assert (code, out, err) == (0, "stored 3, duplicates 1\n", "")
    events = {e.event.id: e.event for e in env.events()}
    assert events["1"].data == b"hello"
    assert events["2"].data == b"\x00\x01"
    assert events["3"].with_attributes(traceparent=None).extensions == {"tenant": "acme", "n": 5, "ok": True}


def _counted(env: Env) -> int:
    env("publish", "--type", "before", "--id", "before")
    return env.count()


def test_malformed_line_in_a_10k_file_stores_nothing(env: Env) -> None:
    before = _counted(env)
    for bad in (7, 7777):  # before the first chunk, and after inserting has begun
        objs = [ce(i, data={"i": i}) for i in range(10_000)]
        path = env.jsonl("big.jsonl", objs)
        lines = path.read_text().splitlines()
        lines[bad - 1] = '{"specversion": "1.0", "id": "x", '
        path.write_text("\n".join(lines) + "\n")
        code, out, err = env("publish", "--file", str(path))
        assert (code, out) == (2, "")
        assert err == (
            f"Error: {path}: 1 invalid event, nothing stored:\n"
            f"line {bad}: not valid JSON (Expecting property name enclosed in double quotes at column 35)\n"
        )
        assert env.count() == before
    assert bad > CHUNK


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"specversion": "1.0", "id": "x", "source": "/s"}, "missing required attribute 'type'"),
        ({**ce("x"), "specversion": "0.3"}, "specversion must be \"1.0\", got '0.3'"),
        ({**ce("x"), "specversion": 1.0}, 'specversion must be "1.0", got 1.0'),
        (
            {**ce("x"), "Tenant": "a"},
            "attribute name 'Tenant' is invalid (lower-case letters and digits, 1-20 characters)",
        ),
        (
            {**ce("x"), "my_ext": "a"},
            "attribute name 'my_ext' is invalid (lower-case letters and digits, 1-20 characters)",
        ),
        ({**ce("x"), "time": "yesterday"}, "attribute 'time' must be an RFC 3339 timestamp, got 'yesterday'"),
        ({**ce("x"), "n": 1.5}, "extension 'n' must be a string, integer or boolean, got float"),
        ([1, 2], "a structured CloudEvent must be a JSON object"),
        (
            {**ce("x"), "data": 1, "data_base64": "AA=="},
            "an event has either 'data' or 'data_base64', not both",
        ),
    ],
)
def test_each_invalid_event_is_reported_by_line(env: Env, line: object, problem: str) -> None:
    before = _counted(env)
    path = env.jsonl("bad.jsonl", [ce(1), ce(2), line, ce(4)])
    code, out, err = env("publish", "--file", str(path))
    assert (code, out, err) == (
        2,
        "",
        f"Error: {path}: 1 invalid event, nothing stored:\nline 3: {problem}\n",
    )
    assert env.count() == before


def test_many_problems_are_capped(env: Env) -> None:
    path = env.jsonl("bad.jsonl", [ce(i) if i % 2 else {"id": str(i)} for i in range(100)])
    code, _, err = env("publish", "--file", str(path))
    lines = err.splitlines()
    assert code == 2
    assert lines[0] == f"Error: {path}: 50 invalid events, nothing stored:"
    assert lines[1] == "line 1: missing required attribute 'source'"
    assert lines[2] == "line 3: missing required attribute 'source'"
    assert len(lines) == 1 + MAX_PROBLEMS + 1
    assert lines[-1] == f"… and {50 - MAX_PROBLEMS} more"
    assert not env.db.exists()


def test_invalid_utf8_in_a_file(env: Env) -> None:
    path = env.dir / "latin1.jsonl"
    good = json.dumps(ce(1)).encode()
    bad = b'{"specversion": "1.0", "id": "2", "source": "/s", "type": "caf\xe9"}'
    path.write_bytes(good + b"\n" + bad + b"\n")
    code, _, err = env("publish", "--file", str(path))
    assert (code, err) == (
        2,
        f"Error: {path}: 1 invalid event, nothing stored:\nline 2: not valid UTF-8 (byte 0xe9 at column 63)\n",
    )
    array = env.dir / "latin1.json"
    array.write_bytes(b"[\n" + good + b",\n" + bad + b"\n]")
    code, _, err = env("publish", "--file", str(array))
    assert (code, err) == (2, f"Error: {array}: not valid UTF-8 (byte 0xe9 on line 3)\n")
    assert not env.db.exists()


def test_array_problems_are_named_by_index(env: Env) -> None:
    path = env.dir / "batch.json"
    path.write_text(json.dumps([ce(0), ce(1, type=""), ce(2)]))
    code, _, err = env("publish", "--file", str(path))
    assert (code, err) == (
        2,
        f"Error: {path}: 1 invalid event, nothing stored:\nevent 1: attribute 'type' must be a non-empty string\n",
    )
    path.write_text('[{"specversion": "1.0"}, ')
    code, _, err = env("publish", "--file", str(path))
    assert (code, err) == (2, f"Error: {path}: not valid JSON (Expecting value at line 1 column 26)\n")
    assert not env.db.exists()


@pytest.mark.parametrize("content", ["", "\n\n  \n", "[]", " [ ] \n"])
def test_empty_file(env: Env, content: str) -> None:
    path = env.dir / "empty.jsonl"
    path.write_text(content)
    code, out, err = env("publish", "--file", str(path))
    assert (code, out) == (2, "")
    assert err == (
        f"Error: {path}: no events in the file (expected JSON lines or a JSON array of structured CloudEvents)\n"
    )
    assert not env.db.exists()


def test_oversized_event_in_a_file(env: Env) -> None:
    env.write_routes("settings:\n  maxEventBytes: 200\n")
    path = env.jsonl("f.jsonl", [ce(1), ce(2, data="x" * 300)])
    code, _, err = env("publish", "--file", str(path))
    size = 302 + sum(len(k) + len(str(v)) for k, v in ce(2).items())
    assert (code, err) == (
        2,
        f"Error: {path}: 1 invalid event, nothing stored:\n"
        f"line 2: event is {size} bytes, over maxEventBytes 200 (settings.maxEventBytes in the routes file)\n",
    )


def test_unreadable_file(env: Env) -> None:
    code, _, err = env("publish", "--file", str(env.dir / "nope.jsonl"))
    assert (code, err) == (
        2,
        f"Error: --file {env.dir / 'nope.jsonl'}: cannot read the file (No such file or directory)\n",
    )


def test_progress_reaches_the_file_size(env: Env) -> None:
    path = env.jsonl("p.jsonl", [ce(i) for i in range(CHUNK + 500)])
    seen: list[int] = []
    with path.open("rb") as fh:
        result = publish_file(str(env.db), str(env.routes), "default", fh, str(path), seen.append)
    assert (result.stored, result.duplicates) == (CHUNK + 500, 0)
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size
    stream = io.BytesIO(json.dumps([ce("a"), ce("b")]).encode())
    seen.clear()
    publish_file(str(env.db), str(env.routes), "default", stream, "<array>", seen.append)
    assert seen == [len(stream.getvalue())]


# --------------------------------------------------------------------------- --url


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[object]:
    sys.path.insert(0, str(Path(__file__).parent))
    from ingress_server import IngressThread

    with IngressThread(tmp_path / "served.db") as srv:
        yield srv


def test_publish_to_a_running_ingress(env: Env, ingress: object, tmp_path: Path) -> None:
    url = ingress.url  # type: ignore[attr-defined]
    code, out, _ = env("publish", "--url", url, "--type", "a", "--id", "u-1", "--source", "/s")
    assert (code, out) == (0, f"stored u-1 at {url}\n")
    code, out, _ = env("publish", "--url", url, "--type", "a", "--id", "u-1", "--source", "/s")
    assert (code, out) == (0, f"duplicate u-1 (source /s): already stored at {url}, nothing written\n")
    path = env.jsonl("f.jsonl", [ce(1), ce(2)])
    code, out, _ = env("publish", "--url", url, "--file", str(path))
    assert (code, out) == (0, "stored 2, duplicates 0\n")
    assert not env.db.exists()  # nothing local
    with Store(str(tmp_path / "served.db")) as s:
        assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
