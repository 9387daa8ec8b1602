"""The lean path of a single publish gives exactly what the full path gives.

A plain ``evroute publish`` builds its event's attributes without the CloudEvent class
(``publish.quick_attributes``), stores them through ``store.publishing`` (row built by hand,
extensions written without ``json``), reads the routes cache without ``json`` and parses its
options with a help option that needs no message catalogue. Each shortcut is checked here
against the code it stands in for: same attributes, same refusals (the lean path never
accepts what the full path refuses, and leaves the wording to it), same row bytes, same help.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evroute.cli import cli
from evroute.cli.publish import publish as publish_command
from evroute.cloudevent import CloudEvent, validate
from evroute.errors import EvrouteError
from evroute.publish import (
    RoutesConfig,
    check_broker,
    event_from_options,
    event_size,
    parse_extensions,
    publish_attributes,
    quick_attributes,
)
from evroute.store import Store
from evroute.store import log as event_log
from evroute.store.publishing import encode_extensions
from evroute.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")

# Values chosen to sit on every edge the full validation has: empty, non-UTF-8 (surrogate
# escapes, as non-UTF-8 argv arrives), control characters, names that are core attributes or
# extensions checked further, values that are not strings.
TEXT = st.one_of(
    st.none(),
    st.sampled_from(
        ["", "a", "order.placed", "/shop", "é", "x\n", " ", "\udcff", "\ud800", "a" * 300, '"q\\']
    ),
    st.text(max_size=8),
)
NAMES = st.one_of(
    st.sampled_from(
        [
            "tenant",
            "Tenant",
            "a" * 20,
            "a" * 21,
            "",
            "my-ext",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "data",
            "data_base64",
            "datacontenttype",
            "dataschema",
            "specversion",
            "traceparent",
            "tracestate",
            "evroutedeliverat",
            "evroutehops",
        ]
    ),
    st.text(alphabet="abcz09-_A", min_size=0, max_size=22),
)
EXT_VALUES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["", "\udcff", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "2026-12-01T09:00:00Z"]
    ),
    st.integers(min_value=-(2**33), max_value=2**33),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
DATA = st.one_of(
    st.none(),
    st.sampled_from(
        [
            b"",
            b"{}",
            b'{"order": 1}',
            b"{oops",
            b"\xff",
            b'"x"',
            b"[1, 2]\n",
            b"null",
            b"[" * 5000 + b"]" * 5000,
        ]
    ),
    st.binary(max_size=8),
)
OPTIONS = st.fixed_dictionaries(
    {
        "type": TEXT,
        "source": TEXT,
        "id": TEXT,
        "subject": TEXT,
        "data": DATA,
        "datacontenttype": st.sampled_from([None, None, None, "text/plain", "application/json", "json"]),
        "dataschema": st.sampled_from([None, None, None, "https://x/s.json", "s.json"]),
        "time": st.sampled_from([None, None, None, "2026-01-02T15:04:05Z", "now"]),
        "extensions": st.one_of(st.none(), st.dictionaries(NAMES, EXT_VALUES, max_size=3)),
    }
)


def _full(options: dict[str, Any]) -> CloudEvent | str:
    try:
        return event_from_options(**options)
    except EvrouteError as exc:
        return f"{type(exc).__name__}: {exc.message}"


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPTIONS)
@example({"type": "a", "source": None, "id": None, "subject": None, "data": None, "datacontenttype": None,
          "dataschema": None, "time": None, "extensions": None})  # fmt: skip
@example({"type": "order.placed", "source": "/shop", "id": "o-1", "subject": "eu", "data": b'{"order": 1}',
          "datacontenttype": None, "dataschema": None, "time": None, "extensions": {"tenant": "acme"}})  # fmt: skip
def test_quick_attributes_are_the_full_paths_or_defer_to_it(options: dict[str, Any]) -> None:
    quick = quick_attributes(**options)
    full = _full(options)
    if quick is None:
        return  # the full path decides, and words any refusal
    assert isinstance(full, CloudEvent), f"the lean path accepted what the full path refuses: {full}"
    # A new id and time are the only differences, and both are what the full path would make.
    assert UUID4.match(str(quick["id"])) if options["id"] is None else quick["id"] == options["id"]
    assert validate(quick) == quick  # the generated time passes the RFC 3339 check
    expected = dict(full.attributes)
    expected["id"], expected["time"] = quick["id"], quick["time"]
    assert list(quick.items()) == list(expected.items())  # same values, same order


def test_the_options_of_a_plain_publish_take_the_lean_path() -> None:
    plain: dict[str, Any] = {"type": "order.placed"}
    assert quick_attributes(**plain) is not None
    assert quick_attributes(
        type="t", source="/s", id="1", subject="s", data=b"{}", extensions={"tenant": "a"}
    )
    # Options checked further (patterns, trace context, schedules) take the full path.
    for more in (
        {"time": "2026-01-02T15:04:05Z"},
        {"datacontenttype": "text/plain"},
        {"dataschema": "https://x/s.json"},
        {"extensions": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
        {"extensions": {"evroutedeliverat": "2026-12-01T09:00:00Z"}},
    ):
        assert quick_attributes(**plain, **more) is None, more


@given(
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers(), st.booleans()), max_size=4
    ),
    st.one_of(st.none(), st.binary(max_size=20)),
)
def test_event_size_counts_as_the_cloudevent_does(attrs: dict[str, Any], data: bytes | None) -> None:
    assert event_size(attrs, data) == CloudEvent(attrs, data).size()


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.one_of(st.text(max_size=6), st.sampled_from(["tenant", 'q"', "b\\", "\x00"])),
        JSON_VALUES,
        max_size=4,
    )
)
@example({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "acme"})
@example({"n": 5, "t": True, "f": False, "neg": -(2**40), "s": 'say "hi"\n\t\u2028é\x7f\ud800'})
def test_extensions_are_written_as_json_writes_them(ext: dict[str, Any]) -> None:
    assert encode_extensions(ext) == json.dumps(ext, separators=(",", ":"), ensure_ascii=False)


@given(st.text(alphabet="abz09-_A\n ", max_size=70))
@example("a" * 63)
@example("a" * 64)
@example("-a")
@example("order-broker\n")
def test_broker_and_extension_names_are_checked_as_the_patterns_say(name: str) -> None:
    broker = re.match(r"^[a-z0-9][a-z0-9-]{0,62}\Z", name) is not None
    try:
        check_broker(name)
        accepted = True
    except EvrouteError:
        accepted = False
    assert accepted == broker
    extension = re.match(r"^[a-z0-9]{1,20}\Z", name) is not None
    try:
        parse_extensions([f"{name}=v"])
        ext_accepted = True
    except EvrouteError:
        ext_accepted = False
    core = name in (
        "id",
        "source",
        "type",
        "subject",
        "time",
        "data",
        "datacontenttype",
        "dataschema",
        "specversion",
    )
    assert ext_accepted == (extension and not core)


# --------------------------------------------------------------------------- the stored row


@pytest.mark.parametrize(
    ("attrs", "data"),
    [
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, None),
        (
            {
                "specversion": "1.0",
                "id": "é-2",
                "source": "/s",
                "type": "t",
                "time": "2026-01-02T15:04:05Z",
                "datacontenttype": "application/json",
                "subject": "sub",
                "dataschema": "https://x/s.json",
                "tenant": 'a "quoted" \\ value\n',
                "n": 7,
                "flag": True,
            },
            b'{"order": 1}',
        ),
    ],
)
def test_the_lean_store_writes_the_row_the_log_writes(
    tmp_path: Path, attrs: dict[str, Any], data: bytes | None
) -> None:
    lean, full = str(tmp_path / "lean.db"), str(tmp_path / "full.db")
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    result = publish_attributes(lean, str(tmp_path / "none.yaml"), "default", {**attrs, **trace}, data)
    assert (result.stored, result.duplicates, result.seq) == (1, 0, 1)
    with SqliteStore(full) as store:
        store.append("default", [CloudEvent({**attrs, **trace}, data)])

    def rows(path: str) -> list[tuple[Any, ...]]:
        with Store(path) as s:
            return s.conn.execute("SELECT * FROM events").fetchall()

    [lean_row], [full_row] = rows(lean), rows(full)
    published_at = 11  # column order of the events table: the moment differs, nothing else
    assert lean_row[:published_at] == full_row[:published_at]
    with Store(lean) as s:
        [stored] = event_log.read_after(s, "default", 0)
    assert stored.event == CloudEvent({**attrs, **trace}, data)
    # The same again is a duplicate, reported as such.
    again = publish_attributes(lean, str(tmp_path / "none.yaml"), "default", {**attrs, **trace}, data)
    assert (again.stored, again.duplicates, again.seq) == (0, 1, None)


# --------------------------------------------------------------------------- the routes cache


@given(
    st.lists(
        st.tuples(st.text(max_size=5), st.text(max_size=5), st.sampled_from(["latest", "earliest"])),
        max_size=3,
    ),
    st.sampled_from(["normal", "full"]),
    st.integers(min_value=1, max_value=2**40),
    st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "-", "+", "\\", "a\\tb", "x\ty\nz\r\\"])),
)
def test_the_routes_cache_reads_back_what_it_wrote(
    routes: list[tuple[str, str, str]], durability: str, max_bytes: int, endpoint: str | None
) -> None:
    config = RoutesConfig(tuple(routes), durability, max_bytes, tracing_endpoint=endpoint)
    assert RoutesConfig.from_text(config.to_text()) == config


def test_a_cache_entry_in_another_form_is_read_as_missing() -> None:
    older = json.dumps({"routes": [["r", "default", "latest"]], "durability": "normal", "maxEventBytes": 10})
    for text in (
        older,
        "",
        "evroute routes cache 2",
        "evroute routes cache 2\nnormal\tx\t-",
        "evroute routes cache 2\nnormal\t5\t-\na\\",
    ):
        assert RoutesConfig.from_text(text) is None, text


# --------------------------------------------------------------------------- the help option


@pytest.mark.parametrize("command", [cli, publish_command], ids=["evroute", "publish"])
def test_the_help_option_is_clicks_own_without_the_catalogue(command: click.Command) -> None:
    ctx = click.Context(command, info_name="evroute", help_option_names=["-h", "--help"])
    ours = command.get_help_option(ctx)
    theirs = click.Command.get_help_option(command, ctx)  # click's, with its text looked up
    assert ours is not None and theirs is not None
    assert (
        ours.get_help_record(ctx)
        == theirs.get_help_record(ctx)
        == ("-h, --help", "Show this message and exit.")
    )
    assert (ours.opts, ours.is_flag, ours.is_eager, ours.expose_value) == (
        theirs.opts,
        theirs.is_flag,
        theirs.is_eager,
        theirs.expose_value,
    )
    assert command.get_help_option(ctx) is ours  # one object: eager callbacks are ordered by it
    assert command.get_params(ctx)[-1] is ours


def test_help_prints_and_exits(tmp_path: Path) -> None:
    from helpers import run_cli

    for args in (["--help"], ["-h"], ["publish", "--help"], ["publish", "-h"]):
        code, out, err = run_cli(*args)
        assert (code, err) == (0, ""), args
        help_line = ["-h,", "--help", "Show", "this", "message", "and", "exit."]
        assert out.startswith("Usage: evroute ")
        assert [line.split() for line in out.splitlines()].count(help_line) == 1, out


def test_a_plain_publish_loads_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    """What the lean path saves is imports: guard each of them (bench/publish.py times it)."""
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: r\n    subscriber: http://127.0.0.1:9/\n")
    script = textwrap.dedent(
        f"""
        import sys
        import click, sqlite3
        before = set(sys.modules)
        from evroute.cli import main
        try:
            main(["--db", {str(tmp_path / "ev.db")!r}, "--routes", {str(tmp_path / "routes.yaml")!r},
                  "publish", "--type", "a", "--ext", "tenant=acme"])
        except SystemExit as exc:
            assert not exc.code, exc.code
        print(sorted(set(sys.modules) - before))
        """
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # the first run creates the database and fills the routes cache
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=environ, check=True
        )
    loaded = set(eval(done.stdout.splitlines()[-1]))
    assert "evroute.store.publishing" in loaded  # (the probe sees the publish's imports)
    unwanted = {
        "json",
        "locale",
        "base64",
        "importlib.util",
        "evroute.cloudevent",
        "evroute.store.log",
        "evroute.store.sqlite",
        "evroute.store.records",
        "evroute.store.cursors",
    }
    assert loaded & unwanted == set()
