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

# Values on every edge the full validation has, one list per option: empty, non-UTF-8
# (surrogate escapes, as non-UTF-8 argv arrives), control characters, names that are core
# attributes or extensions checked further, values that are not strings.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
EDGES: dict[str, list[Any]] = {
    "type": ["order.placed", None, "", "é", "\udcff", "\ud800", "x\n", " ", 5],
    "source": [None, "/shop", "", "\udcff", "é", '"q\\'],
    "id": [None, "o-1", "", "\udcff", "a" * 300],
    "subject": [None, "eu", "", "\udcff", "\t"],
    "data": [None, b'{"order": 1}', b"", b"{oops", b"\xff", b"[1, 2]\n", b"null", b"[" * 5000 + b"]" * 5000],
    "datacontenttype": [None, "text/plain", "application/json", "json"],
    "dataschema": [None, "https://x/s.json", "s.json"],
    "time": [None, "2026-01-02T15:04:05Z", "now"],
    "extensions": [
        None,
        {},
        {"tenant": "acme"},
        {"tenant": "acme", "region": "eu"},
        {"tenant": ""},
        {"tenant": "\udcff"},
        {"tenant": 'a "b" \\ c\n'},
        {"Tenant": "x"},
        {"a" * 20: "x"},
        {"a" * 21: "x"},
        {"": "x"},
        {"my-ext": "x"},
        {"data": "x"},
        {"data_base64": "x"},
        {"id": "x"},
        {"time": "x"},
        {"specversion": "1.0"},
        {"traceparent": TRACEPARENT},
        {"traceparent": "bad"},
        {"tracestate": "a=b"},
        {"evroutedeliverat": "2026-12-01T09:00:00Z"},
        {"evroutedeliverat": "soon"},
        {"evroutehops": "1"},
        {"n": 5},
        {"n": 2**40},
        {"b": True},
        {"x": None},
        {"f": 1.5},
    ],
}
BASE = {name: values[0] for name, values in EDGES.items()}


def _full(options: dict[str, Any]) -> CloudEvent | str:
    try:
        return event_from_options(**options)
    except EvrouteError as exc:
        return f"{type(exc).__name__}: {exc.message}"


def _lean_eligible(options: dict[str, Any]) -> bool:
    """The options the lean path promises to take (when the full path accepts them)."""
    ext = options["extensions"] or {}
    checked = {"traceparent", "tracestate", "evroutedeliverat"}
    return (
        options["time"] is None
        and options["datacontenttype"] is None
        and options["dataschema"] is None
        and all(isinstance(v, str) and k not in checked for k, v in ext.items())
    )


def _check(options: dict[str, Any]) -> None:
    quick = quick_attributes(**options)
    full = _full(options)
    if quick is None:
        # The full path decides (and words any refusal); what the lean path promises, it takes.
        assert isinstance(full, str) or not _lean_eligible(options), options
        return
    assert isinstance(full, CloudEvent), f"the lean path accepted what the full path refuses: {full}"
    # A new id and time are the only differences, and both are what the full path would make.
    assert UUID4.match(str(quick["id"])) if options["id"] is None else quick["id"] == options["id"]
    assert validate(quick) == quick  # the generated time passes the RFC 3339 check
    expected = dict(full.attributes)
    expected["id"], expected["time"] = quick["id"], quick["time"]
    assert list(quick.items()) == list(expected.items())  # same values, same order


def test_quick_attributes_are_the_full_paths_for_every_pair_of_edges() -> None:
    names = list(EDGES)
    checked = 0
    for a, first in enumerate(names):
        for second in names[a + 1 :]:
            for one in EDGES[first]:
                for two in EDGES[second]:
                    _check({**BASE, first: one, second: two})
                    checked += 1
    assert checked > 1500


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({name: st.sampled_from(values) for name, values in EDGES.items()}))
def test_quick_attributes_are_the_full_paths_for_any_mix_of_edges(options: dict[str, Any]) -> None:
    _check(options)


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
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(alphabet='ab"\\é \n\x7f\u2028'),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(st.dictionaries(st.text(alphabet='ab"\\é \n\x00', max_size=4), JSON_VALUES, max_size=4))
@example({"traceparent": TRACEPARENT, "tenant": "acme"})
@example({"s": 'say "hi"'})
@example({"s": "back\\slash"})
@example({'q"': 1})
@example({"k\\": "v"})
@example(
    {"n": 5, "t": True, "f": False, "neg": -(2**40), "s": "é\u2028", "c": "\x7f", "nl": "a\nb", "u": "\ud800"}
)
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


def test_the_package_names_load_when_first_used() -> None:
    import evroute
    from evroute import cloudevent, errors, store

    assert (evroute.CloudEvent, evroute.make_event) == (cloudevent.CloudEvent, cloudevent.make_event)
    assert (evroute.EvrouteError, evroute.Store) == (errors.EvrouteError, store.Store)
    assert sorted(evroute.__all__) == ["CloudEvent", "EvrouteError", "Store", "make_event"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        evroute.nothing  # type: ignore[attr-defined]  # noqa: B018
