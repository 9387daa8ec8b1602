"""Bad input corpus (SPEC 8): CLI flags, event files, routes files, ingress requests and
subscriber responses, each through the real entry point or a real ``evroute worker`` process.

- CLI flags, event files, routes files: one ``Error:`` line (routes files and event files
  follow it with the problem lines), exit 2 (1 for run-time faults), and the database and the
  routes file exactly as they were.
- Ingress requests, sent byte for byte to a real ``evroute worker --listen``: the right 4xx,
  nothing stored, the worker still serving.
- Subscriber responses, against a real worker: every event ends delivered or dead-lettered with
  a clear reason, the worker keeps running (and stops cleanly), its memory stays flat while
  subscribers stream hundreds of megabytes, and the database passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from helpers import evroute, free_port, progress, stop, wait_until

from evroute.cloudevent import make_event
from evroute.store import Store, cursors, deadletters
from evroute.store import log as event_log

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PY = sys.executable
MIB = 1024 * 1024
HUGE = 400 * MIB  # what the "huge" subscribers offer to send
DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON that no recursive parser can read


# --------------------------------------------------------------------------- helpers


def run_cli(folder: Path, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """``evroute --db folder/ev.db --routes folder/routes.yaml ARGS`` through the real entry point.

    ``{tmp}`` in an argument is the folder. A case may pass its own ``--db``/``--routes``
    (the last one given wins)."""
    argv = [
        "--db",
        str(folder / "ev.db"),
        "--routes",
        str(folder / "routes.yaml"),
        *(a.replace("{tmp}", str(folder)) for a in args),
    ]
    return helpers.run_cli(*argv, input=input)


def fingerprint(folder: Path) -> dict[str, object]:
    """Everything a refused command must leave alone: every table's rows, the routes file, and
    the bytes of any other file in the folder."""
    state: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.name.startswith("ev.db-"):
            continue
        if path.name == "ev.db":
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in sorted(tables):
                    rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{table}"'))
                    state[f"table {table}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            finally:
                conn.close()
        else:
            state[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------- a seeded database

SEED_ROUTES = """\
settings: {maxEventBytes: 4096}
routes:
  - name: audit
    start: earliest
    subscriber: {command: [sh, -c, "exit 0"]}
"""


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with events, a cursor and a dead letter: refusals must leave all of it alone."""
    folder = tmp_path_factory.mktemp("seed")
    (folder / "routes.yaml").write_text(SEED_ROUTES)
    events = [
        make_event(
            type="order.placed",
            source="/shop",
            id=f"o-{i}",
            data=b'{"n": 1}',
            datacontenttype="application/json",
        )
        for i in range(3)
    ]
    now = time.time()
    with Store(str(folder / "ev.db")) as store:
        cursors.ensure(store, [("audit", "default", "earliest")])
        event_log.append(store, "default", events)
        deadletters.add(
            store,
            [
                deadletters.NewDeadLetter(
                    route="audit",
                    broker="default",
                    seq=1,
                    event=events[0],
                    attempts=1,
                    status=65,
                    reason="permanent failure",
                    error="exit 65",
                    body=None,
                    first_failed_at=now,
                    dead_at=now,
                )
            ],
        )
    return folder


@pytest.fixture
def case_dir(seed: Path, tmp_path: Path) -> Path:
    for name in ("routes.yaml", "ev.db"):
        shutil.copy(seed / name, tmp_path / name)
    (tmp_path / "deep.json").write_text(DEEP)
    (tmp_path / "garbage.db").write_bytes(random.Random(1).randbytes(3000))
    (tmp_path / "sub").mkdir()
    return tmp_path


def assert_one_error_line(err: str, message: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    assert message in lines[0], err


# --------------------------------------------------------------------------- CLI flags

# (id, arguments, exit status, part of the one Error: line)
CLI_CASES: list[tuple[str, tuple[str, ...], int, str]] = [
    ("unknown-option", ("publish", "--bogus"), 2, "No such option '--bogus'. (see `evroute publish --help`)"),
    ("unknown-command", ("nosuch",), 2, "No such command 'nosuch'"),
    ("missing-argument", ("dlq", "show"), 2, "Missing argument 'ID'"),
    ("not-an-integer", ("dlq", "show", "abc"), 2, "'abc' is not a valid integer"),
    ("limit-out-of-range", ("events", "list", "--limit", "0"), 2, "Invalid value for '--limit'"),
    ("publish-bad-time", ("publish", "--type", "t", "--time", "yesterday"), 2, "RFC 3339"),
    ("publish-bad-json-data", ("publish", "--type", "t", "--data", "{oops"), 2, "--data: not valid JSON"),
    (
        "publish-deep-json-data",
        ("publish", "--type", "t", "--data", "@{tmp}/deep.json"),
        2,
        "nested too deeply",
    ),
    (
        "publish-ext-name",
        ("publish", "--type", "t", "--ext", "Tenant=x"),
        2,
        "--ext name 'Tenant' is invalid",
    ),
    ("publish-ext-core", ("publish", "--type", "t", "--ext", "id=x"), 2, "'id' is a core attribute"),
    ("publish-broker-name", ("publish", "--type", "t", "--broker", "Bad_B"), 2, "is not a broker name"),
    (
        "publish-data-file-missing",
        ("publish", "--type", "t", "--data", "@{tmp}/nope"),
        2,
        "cannot read the file",
    ),
    (
        "publish-over-max-event-bytes",
        ("publish", "--type", "t", "--datacontenttype", "text/plain", "--data", "x" * 5000),
        2,
        "over maxEventBytes 4096",
    ),
    ("publish-url-scheme", ("publish", "--type", "t", "--url", "ftp://x/"), 2, "not a usable http(s) URL"),
    (
        "publish-file-and-type",
        ("publish", "--file", "{tmp}/deep.json", "--type", "t"),
        2,
        "cannot be combined",
    ),
    ("publish-file-missing", ("publish", "--file", "{tmp}/nope.jsonl"), 2, "nope.jsonl"),
    ("worker-once-and-drain", ("worker", "--once", "--drain"), 2, "--once and --drain cannot be combined"),
    (
        "worker-listen-port",
        ("worker", "--once", "--listen", "127.0.0.1:99999"),
        2,
        "--listen '127.0.0.1:99999'",
    ),
    ("worker-listen-text", ("worker", "--listen", "nope"), 2, "--listen 'nope' is not valid"),
    ("dlq-show-unknown", ("dlq", "show", "999"), 2, "no dead letter with id 999"),
    ("dlq-purge-without-yes", ("dlq", "purge"), 2, "add --yes to confirm"),
    (
        "dlq-purge-bad-before",
        ("dlq", "purge", "--before", "yesterday", "--yes"),
        2,
        "bad --before 'yesterday'",
    ),
    ("dlq-replay-nothing", ("dlq", "replay"), 2, "nothing selected"),
    ("events-show-unknown", ("events", "show", "nope"), 2, "no event with id or seq 'nope'"),
    ("events-list-broker", ("events", "list", "--broker", "Bad"), 2, "--broker 'Bad' is not a broker name"),
    ("subscribe-bad-name", ("subscribe", "add", "Bad_Name", "--sink", "http://h/"), 2, "Bad_Name"),
    ("subscribe-bad-sink", ("subscribe", "add", "n", "--sink", "ftp://x"), 2, "not an absolute http(s) URL"),
    (
        "subscribe-bad-cesql",
        ("subscribe", "add", "n", "--sink", "http://h/", "--cesql", "type = "),
        2,
        "--cesql",
    ),
    (
        "subscribe-bad-filter",
        ("subscribe", "add", "n", "--sink", "http://h/", "--filter", "type"),
        2,
        "KEY=VALUE",
    ),
    ("subscribe-no-program", ("subscribe", "add", "n", "--command", "no-such-program-xyz"), 2, "not found"),
    (
        "subscribe-bad-duration",
        ("subscribe", "add", "n", "--sink", "http://h/", "--backoff-delay", "forever"),
        2,
        "bad duration 'forever'",
    ),
    ("subscribe-duplicate", ("subscribe", "add", "audit", "--sink", "http://h/"), 2, "already exists"),
    ("subscribe-reset-to", ("subscribe", "reset", "audit", "--to", "yesterday"), 2, "bad --to 'yesterday'"),
    (
        "subscribe-remove-unknown",
        ("subscribe", "remove", "nosuch"),
        2,
        "route 'nosuch' is not in",
    ),
    ("routes-test-broker", ("routes", "test", "--type", "t", "--broker", "Bad"), 2, "not a broker name"),
    ("routes-test-file-missing", ("routes", "test", "{tmp}/nope.json"), 2, "cannot read"),
    ("routes-file-is-a-folder", ("--routes", "{tmp}/sub", "routes", "check"), 2, "cannot be read"),
    ("export-namespace", ("export", "knative", "--namespace", "Bad_NS"), 2, "is not a valid name"),
    # run-time faults: exit 1, and nothing is created or touched
    ("db-is-a-folder", ("--db", "{tmp}/sub", "publish", "--type", "t"), 1, "cannot open database"),
    ("db-is-not-sqlite", ("--db", "{tmp}/garbage.db", "publish", "--type", "t"), 1, "file is not a database"),
    ("db-is-not-sqlite-status", ("--db", "{tmp}/garbage.db", "status"), 1, "file is not a database"),
    (
        "db-read-only-filesystem",
        ("--db", "/proc/evroute-test.db", "publish", "--type", "t"),
        1,
        "cannot open",
    ),
    ("db-folder-missing", ("--db", "{tmp}/no/ev.db", "publish", "--type", "t"), 1, "does not exist"),
    ("db-missing-for-a-listing", ("--db", "{tmp}/none.db", "dlq", "list"), 1, "does not exist"),
]


@pytest.mark.parametrize(
    ("args", "code", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_flags(case_dir: Path, args: tuple[str, ...], code: int, message: str) -> None:
    before = fingerprint(case_dir)
    got, out, err = run_cli(case_dir, *args)
    assert (got, out) == (code, ""), err
    assert_one_error_line(err, message)
    assert fingerprint(case_dir) == before
    assert not (case_dir / "none.db").exists() and not (case_dir / "no").exists()


# --------------------------------------------------------------------------- event files


def _ce(i: object = "1", **kw: object) -> str:
    return json.dumps({"specversion": "1.0", "id": i, "source": "/s", "type": "t", **kw})


GOOD_LINE = _ce("good")

# (id, file content, part of the error text)
EVENT_FILE_CASES: list[tuple[str, bytes, str]] = [
    ("not-json", f"{GOOD_LINE}\n{{oops\n".encode(), "line 2: not valid JSON"),
    (
        "invalid-utf8",
        f"{GOOD_LINE}\n".encode() + _ce("2")[:-2].encode() + b'\xe9"}\n',
        "line 2: not valid UTF-8",
    ),
    ("raw-nul-in-string", _ce("a\0b").replace("\\u0000", "\0").encode() + b"\n", "line 1: not valid JSON"),
    ("lone-surrogate", (_ce("x") + "\n").replace('"x"', '"\\ud800"').encode(), "'id' is not valid UTF-8"),
    (
        "missing-type",
        b'{"specversion": "1.0", "id": "1", "source": "/s"}\n',
        "missing required attribute 'type'",
    ),
    ("specversion-0.3", _ce(specversion="0.3").encode() + b"\n", 'specversion must be "1.0"'),
    ("id-is-a-number", _ce(7).encode() + b"\n", "'id' must be a non-empty string"),
    ("empty-source", _ce(source="").encode() + b"\n", "'source' must be a non-empty string"),
    ("bad-time", _ce(time="2024-13-45T99:00:00Z").encode() + b"\n", "RFC 3339"),
    ("bad-media-type", _ce(datacontenttype="application/json\n").encode() + b"\n", "media type"),
    ("relative-dataschema", _ce(dataschema="schema.json").encode() + b"\n", "absolute URI"),
    ("data-and-base64", _ce(data=1, data_base64="AA==").encode() + b"\n", "data_base64"),
    ("bad-base64", _ce(data_base64="***").encode() + b"\n", "base64"),
    ("upper-case-extension", _ce(Tenant="x").encode() + b"\n", "'Tenant' is invalid"),
    ("extension-object", _ce(tenant={"a": 1}).encode() + b"\n", "must be a string, integer or boolean"),
    ("extension-out-of-range", _ce(big=2**40).encode() + b"\n", "32-bit integer range"),
    ("over-max-event-bytes", _ce(data="x" * 5000).encode() + b"\n", "over maxEventBytes 4096"),
    ("line-is-a-string", b'"hello"\n' + GOOD_LINE.encode() + b"\n", "line 1"),
    ("array-then-more", b"[1, 2]\n" + GOOD_LINE.encode() + b"\n", "not valid JSON"),
    ("array-with-a-number", f"[{GOOD_LINE}, 5]".encode(), "event"),
    ("truncated-array", f"[{GOOD_LINE}, {{".encode(), "not valid JSON"),
    ("deeply-nested-line", (DEEP + "\n").encode(), "nested too deeply"),
    ("deeply-nested-data", _ce(data=[]).replace("[]", DEEP).encode() + b"\n", "nested too deeply"),
    ("only-blank-lines", b"\n   \n\n", "no events in the file"),
    ("two-bad-lines-of-five", "\n".join([GOOD_LINE, "{", GOOD_LINE, "[", GOOD_LINE]).encode(), "line 4"),
]


@pytest.mark.parametrize(
    ("content", "message"), [c[1:] for c in EVENT_FILE_CASES], ids=[c[0] for c in EVENT_FILE_CASES]
)
def test_event_files(case_dir: Path, content: bytes, message: str) -> None:
    path = case_dir / "sub" / "events.jsonl"
    path.write_bytes(content)
    before = fingerprint(case_dir)
    code, out, err = run_cli(case_dir, "publish", "--file", str(path))
    assert (code, out) == (2, ""), err
    first, *rest = err.splitlines()
    assert first.startswith("Error: ") and str(path) in first, err
    assert message in err, err
    # the lines after the first name the bad events, nothing else (no traceback)
    assert all(line.startswith(("line ", "event ", "…", "... ")) for line in rest), err
    assert fingerprint(case_dir) == before


# --------------------------------------------------------------------------- routes files

_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)

# (id, routes file, regex one problem line must match)
ROUTES_CASES: list[tuple[str, str | bytes, str]] = [
    ("unclosed-bracket", "routes: [\n  {name: a, subscriber: http://h/\n", r"malformed YAML"),
    ("tab-indentation", "routes:\n\t- name: a\n", r"routes\.yaml:2:1: malformed YAML"),
    ("not-utf8", b"routes:\n  - name: caf\xe9\n    subscriber: http://h/\n", r"not UTF-8"),
    ("document-is-a-list", "- a\n- b\n", r"routes\.yaml:1:1: a document must be a mapping"),
    ("alias-bomb", _BOMB + "routes: *i\n", r"YAML aliases expand to more than \d+ values"),
    ("recursive-alias", "routes: &r\n  - *r\n", r"alias"),
    (
        "python-tag",
        "routes:\n  - name: a\n    subscriber: !!python/object/apply:os.system [touch PWNED]\n",
        r":3:",
    ),
    ("unknown-top-key", "rutes: []\n", r"routes\.yaml:1:1: unknown key 'rutes'"),
    (
        "unknown-route-key",
        "routes:\n  - {name: a, subscriber: http://h/, colour: red}\n",
        r"unknown key 'colour'",
    ),
    (
        "duplicate-key",
        "routes:\n  - name: a\n    subscriber: http://h/\n    subscriber: http://i/\n",
        r":4:5: dup",
    ),
    (
        "duplicate-name",
        "routes:\n  - {name: a, subscriber: http://h/}\n  - {name: a, subscriber: http://i/}\n",
        r"a",
    ),
    ("bad-name", "routes:\n  - {name: Inventory_1, subscriber: http://h/}\n", r"Inventory_1"),
    ("bad-duration", "routes:\n  - {name: a, subscriber: http://h/, delivery: {timeout: soon}}\n", r"'soon'"),
    ("negative-retry", "routes:\n  - {name: a, subscriber: http://h/, delivery: {retry: -1}}\n", r"retry"),
    (
        "zero-concurrency",
        "routes:\n  - {name: a, subscriber: http://h/, delivery: {concurrency: 0}}\n",
        r"conc",
    ),
    (
        "backoff-policy",
        "routes:\n  - {name: a, subscriber: http://h/, delivery: {backoffPolicy: fib}}\n",
        r"fib",
    ),
    (
        "empty-exact",
        "routes:\n  - {name: a, subscriber: http://h/, filters: [{exact: {type: ''}}]}\n",
        r"empty",
    ),
    (
        "two-dialects",
        "routes:\n  - {name: a, subscriber: http://h/, filters: [{exact: {type: t}, prefix: {type: t}}]}\n",
        r"route 'a'",
    ),
    ("bad-cesql", "routes:\n  - {name: a, subscriber: http://h/, filters: [{cesql: 'type = '}]}\n", r"CESQL"),
    ("upper-case-attribute", "routes:\n  - {name: a, subscriber: http://h/, filter: {Type: t}}\n", r"'Type'"),
    ("unset-variable", "routes:\n  - {name: a, subscriber: 'http://h/?k=${NOT_SET_XYZ}'}\n", r"NOT_SET_XYZ"),
    ("relative-uri", "routes:\n  - {name: a, subscriber: /orders}\n", r"route 'a'"),
    ("ftp-uri", "routes:\n  - {name: a, subscriber: 'ftp://h/'}\n", r"route 'a'"),
    (
        "program-not-found",
        "routes:\n  - {name: a, subscriber: {command: [no-such-program-xyz]}}\n",
        r"not found",
    ),
    ("bad-max-event-bytes", "settings: {maxEventBytes: lots}\nroutes: []\n", r"maxEventBytes"),
    (
        "knative-unresolved-ref",
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: a}\n"
        "spec: {broker: default, subscriber: {ref: {apiVersion: v1, kind: Service, name: ghost}}}\n",
        r"ghost",
    ),
]


def _write_routes(folder: Path, text: str | bytes) -> None:
    path = folder / "routes.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize(("text", "problem"), [c[1:] for c in ROUTES_CASES], ids=[c[0] for c in ROUTES_CASES])
def test_routes_files(case_dir: Path, text: str | bytes, problem: str) -> None:
    import re

    _write_routes(case_dir, text)
    before = fingerprint(case_dir)
    started = time.monotonic()
    code, out, err = run_cli(case_dir, "routes", "check")
    assert time.monotonic() - started < 10
    assert (code, out) == (2, ""), err
    first, *problems = err.splitlines()
    assert re.match(r"Error: routes file has \d+ problems?:$", first), err
    assert problems and all(
        re.match(rf"{re.escape(str(case_dir))}/routes\.yaml:\d+:\d+: ", p) for p in problems
    ), err
    assert any(re.search(problem, p) for p in problems), err
    assert fingerprint(case_dir) == before
    assert not (case_dir / "PWNED").exists() and not Path("PWNED").exists()


WORKER_ROUTES_CASES = ("tab-indentation", "alias-bomb", "python-tag", "unset-variable", "program-not-found")


def test_worker_refuses_bad_routes_files_and_touches_nothing(seed: Path, tmp_path: Path) -> None:
    """``evroute worker --once`` as a process (a few cases, in parallel: the worker loads routes
    with the same code as ``routes check``, which goes through every case above)."""
    procs = []
    for name, text, _ in ROUTES_CASES:
        if name not in WORKER_ROUTES_CASES:
            continue
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(seed / "ev.db", folder / "ev.db")
        _write_routes(folder, text)
        procs.append(
            (name, folder, fingerprint(folder), evroute(folder, "worker", "--once", stderr=subprocess.PIPE))
        )
    for name, folder, before, proc in procs:
        _, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode == 2, f"{name}: {text}"
        assert text.startswith("Error: routes file has"), f"{name}: {text}"
        assert "Traceback" not in text, f"{name}: {text}"
        assert fingerprint(folder) == before, name
        assert not (folder / "PWNED").exists()


# --------------------------------------------------------------------------- ingress requests

TOKEN = "ingress-token-1"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
BINARY = "ce-specversion: 1.0\r\nce-id: i-1\r\nce-source: /raw\r\nce-type: t\r\n"


def _post(headers: str, body: bytes = b"", path: str = "/") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{AUTH}{headers}"
    if "content-length" not in headers.lower() and "transfer-encoding" not in headers.lower():
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


STRUCTURED_CT = "Content-Type: application/cloudevents+json\r\n"


_GZIP_BOMB = gzip.compress(
    b'{"specversion": "1.0", "id": "bomb", "source": "/raw", "type": "t", "data": "'
    + b" " * (64 * MIB)
    + b'"}',
    compresslevel=9,
)
_DEEP_EVENT = (  # under the ingress's body limit, and still past any recursive parser
    '{"specversion": "1.0", "id": "deep", "source": "/raw", "type": "t", "data": '
    + "[" * 20_000
    + "]" * 20_000
    + "}"
).encode()
_CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00\x00\x02\x13\x01\x01\x00"

# (id, bytes sent, statuses accepted; None = the connection closed without an answer)
INGRESS_CASES: list[tuple[str, bytes, set[int | None], bool]] = [
    # the last field: half-close after sending (the client says it has nothing more)
    ("truncated-body", _post(BINARY + "Content-Length: 100\r\n", b"short"), {400, None}, True),
    (
        "length-and-chunked",
        _post(BINARY + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        {400},
        False,
    ),
    (
        "bad-chunk-size",
        _post(BINARY + "Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
        {400},
        False,
    ),
    (
        "two-content-lengths",
        _post(BINARY + "Content-Length: 1\r\nContent-Length: 2\r\n", b"ab"),
        {400},
        False,
    ),
    ("negative-content-length", _post(BINARY + "Content-Length: -1\r\n", b""), {400}, False),
    ("header-over-8k", _post(BINARY + "ce-big: " + "x" * 20_000 + "\r\n"), {400, 431}, False),
    ("header-without-colon", _post(BINARY + "this is not a header\r\n"), {400}, False),
    ("folded-header", _post(BINARY + "ce-subject: a\r\n  continued\r\n"), {400}, False),
    ("gzip-bomb", _post(STRUCTURED_CT + "Content-Encoding: gzip\r\n", _GZIP_BOMB), {413}, False),
    (
        "gzip-that-is-not",
        _post(STRUCTURED_CT + "Content-Encoding: gzip\r\n", b"not gzip at all"),
        {400},
        False,
    ),
    ("deeply-nested-structured", _post(STRUCTURED_CT, _DEEP_EVENT), {400}, False),
    (
        "deeply-nested-batch",
        _post("Content-Type: application/cloudevents-batch+json\r\n", DEEP.encode()),
        {400},
        False,
    ),
    (
        "expect-continue-over-limit",
        _post(BINARY + "Expect: 100-continue\r\nContent-Length: 999999999\r\n"),
        {413},
        False,
    ),
    ("tls-client-hello", _CLIENT_HELLO, {400, None}, False),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 505, None}, False),
    ("garbage-request-line", b"HELLO WORLD\r\n\r\n", {400, None}, False),
    ("nul-in-path", _post(BINARY, path="/or\x00ders"), {400, 404}, False),
    ("percent-garbage-path", _post(BINARY, path="/%zz"), {404}, False),
]


def _exchange(port: int, data: bytes, half_close: bool) -> tuple[int | None, bytes]:
    """Send ``data``; the status of the first final (non-1xx) response and its bytes, or None
    when the connection closed without one."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before everything is sent
        try:
            while True:
                status, complete = _parse_response(answer)
                if complete:
                    return status, answer
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    status, _ = _parse_response(answer)
    return status, answer


def _parse_response(data: bytes) -> tuple[int | None, bool]:
    while data.startswith(b"HTTP/1.1 1"):  # skip interim responses (100 Continue)
        _, _, data = data.partition(b"\r\n\r\n")
    if not data.startswith(b"HTTP/1."):
        return None, False
    head, sep, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, bool(sep) and len(body) >= int(value)
    return status, False


@pytest.fixture(scope="module")
def ingress_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("ingress")
    (folder / "routes.yaml").write_text("settings: {maxEventBytes: 65536}\nroutes: []\n")
    port = free_port()
    log = (folder / "worker.log").open("wb")
    proc = evroute(folder, "worker", "--listen", f"127.0.0.1:{port}", "--token", TOKEN, stderr=log)
    try:

        def healthy() -> bool:
            status, _ = _exchange(
                port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False
            )
            return status == 200

        wait_until(lambda: proc.poll() is None and _alive(port) and healthy(), 20, "ingress up")
        yield port, folder
        assert proc.poll() is None, "the worker died"
        assert healthy()
    finally:
        code = stop(proc)
        log.close()
    text = (folder / "worker.log").read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    with Store(str(folder / "ev.db")) as store:
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert integrity(folder / "ev.db") == "ok"


def _alive(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("data", "statuses", "half_close"), [c[1:] for c in INGRESS_CASES], ids=[c[0] for c in INGRESS_CASES]
)
def test_ingress_requests(
    ingress_worker: tuple[int, Path], data: bytes, statuses: set[int | None], half_close: bool
) -> None:
    port, folder = ingress_worker
    status, answer = _exchange(port, data, half_close)
    assert status in statuses, answer[:300]
    with Store(str(folder / "ev.db")) as store:
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    # a good request still goes through afterwards (then it is taken back out of the count)
    ok, answer = _exchange(port, _post(BINARY.replace("i-1", "probe")), False)
    assert ok == 202, answer
    with Store(str(folder / "ev.db")) as store, store.write() as conn:
        conn.execute("DELETE FROM events WHERE id = 'probe'")


# --------------------------------------------------------------------------- subscriber responses


class RawServer:
    """A loopback HTTP server that answers with whatever bytes its handler writes, for the
    responses a well-behaved HTTP library refuses to produce (lies, trickles, resets, floods).
    Handlers are looked up by the request path's last segment."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[socket.socket], None]] = {}
        self.sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                name = path.rstrip("/").rsplit("/", 1)[-1]
                with self.lock:
                    self.requests[name] += 1
                self.handlers[name](conn)
            except OSError:
                pass

    # ---- handlers

    def count(self, name: str, n: int) -> None:
        with self.lock:
            self.sent[name] += n

    def raw(self, data: bytes) -> Callable[[socket.socket], None]:
        return lambda conn: conn.sendall(data)

    def stream(self, name: str, head: bytes, chunked: bool = False) -> Callable[[socket.socket], None]:
        """``head``, then zeros until HUGE bytes are out or the client goes away."""

        def handler(conn: socket.socket) -> None:
            conn.sendall(head)
            block = b"\0" * (256 * 1024)
            frame = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
            out = 0
            while out < HUGE and not self.stopping.is_set():
                conn.sendall(frame)
                out += len(block)
                self.count(name, len(block))

        return handler

    def trickle(self, name: str, head: bytes, seconds: float = 4.0) -> Callable[[socket.socket], None]:
        """``head``, then one byte every 50 ms: always something, never enough."""

        def handler(conn: socket.socket) -> None:
            conn.sendall(head)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.stopping.is_set():
                conn.sendall(b"a")
                self.count(name, 1)
                time.sleep(0.05)

        return handler

    def reset(self, data: bytes) -> Callable[[socket.socket], None]:
        """Send ``data``, then abort the connection (RST, not FIN)."""

        def handler(conn: socket.socket) -> None:
            if data:
                conn.sendall(data)
                time.sleep(0.05)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        return handler


def head(status: int, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


REPLY = {"ce-specversion": "1.0", "ce-id": "reply-1", "ce-source": "/reply", "ce-type": "reply.t"}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}

# Command subscribers, as Python programs.
SCRIPTS = {
    "stdout-flood": "import sys\nb = b'x' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.buffer.write(b)\n",
    "stderr-flood": "import sys\nb = b'e' * (1 << 20)\nfor _ in range(300):\n    sys.stderr.buffer.write(b)\nsys.exit(3)\n",
    "invalid-json": 'print(\'{"specversion": "1.0", oops\')\n',
    "deep-json": "import sys\nsys.stdout.write('{\"a\":' * 50_000 + '1' + '}' * 50_000)\n",
    "invalid-reply": 'print(\'{"specversion": "1.0", "id": "r"}\')\n',
    "binary-garbage": "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4)\nsys.stderr.buffer.write(b'\\xff\\xfe bad')\nsys.exit(65)\n",
    "killed": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "aborts": "import os\nos.abort()\n",
    "never-exits": (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)'])\n"
        "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(600)\n"
    ),
    "forks-survivor": (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
    ),
    "closes-stdin": "import os\nos.close(0)\n",
    "reads-stdin": "import sys\nsys.stdin.buffer.read()\n",
}

# (route, expected state, reason, part of the error)
SUBSCRIBER_CASES: list[tuple[str, str, str | None, str | None]] = [
    ("huge-plain-200", "delivered", None, None),
    ("huge-chunked-200", "delivered", None, None),
    (
        "huge-reply",
        "dead",
        "permanent failure",
        "invalid reply: body is over 2097152 bytes (maxEventBytes 1048576)",
    ),
    ("huge-error-500", "dead", "retries exhausted", "HTTP 500"),
    ("slow-headers", "dead", "retries exhausted", "timeout after 1s"),
    ("slow-body-plain-200", "delivered", None, None),
    ("slow-body-reply", "dead", "retries exhausted", "timeout after 1s"),
    (
        "reply-bad-utf8-header",
        "dead",
        "permanent failure",
        "invalid reply: header 'ce-type' is not valid UTF-8",
    ),
    ("reply-not-an-event", "dead", "permanent failure", "invalid reply: missing required attribute"),
    ("reply-structured-garbage", "dead", "permanent failure", "invalid reply: not valid JSON"),
    ("reply-nested-too-deeply", "dead", "permanent failure", "nested too deeply"),
    ("garbage-body-200", "delivered", None, None),
    ("reset-mid-body-200", "delivered", None, None),
    ("reset-mid-reply", "dead", "retries exhausted", "reply body cut short"),
    ("reset-before-answer", "dead", "retries exhausted", "127.0.0.1"),
    ("garbage-status-line", "dead", "retries exhausted", "bad response"),
    ("bad-content-length", "dead", "retries exhausted", "bad response"),
    ("cmd-stdout-flood", "delivered", None, None),
    ("cmd-stderr-flood", "dead", "retries exhausted", "exit 3"),
    ("cmd-invalid-json", "delivered", None, None),
    ("cmd-deep-json", "delivered", None, None),
    ("cmd-invalid-reply", "dead", "permanent failure", "invalid reply"),
    ("cmd-binary-garbage", "dead", "permanent failure", "exit 65"),
    ("cmd-killed", "dead", "retries exhausted", "killed by SIGKILL"),
    ("cmd-aborts", "dead", "retries exhausted", "killed by SIGABRT"),
    ("cmd-never-exits", "dead", "retries exhausted", "timeout after 1s"),
    ("cmd-forks-survivor", "delivered", None, None),
    ("cmd-closes-stdin", "delivered", None, None),
    # an event whose JSON data is nested past any recursive parser, in structured mode and on stdin
    ("deep-data-structured", "delivered", None, None),
    ("deep-data-command", "delivered", None, None),
]


def _http_handlers(server: RawServer) -> None:
    deep_reply = (
        b'{"specversion": "1.0", "id": "d", "source": "/d", "type": "t", "data": ' + DEEP.encode() + b"}"
    )
    bad_utf8 = head(200, REPLY, 0).replace(b"ce-type: reply.t", b"ce-type: caf\xe9")
    server.handlers.update(
        {
            "huge-plain-200": server.stream("huge-plain-200", head(200, {}, HUGE)),
            "huge-chunked-200": server.stream("huge-chunked-200", head(200, {}, None), chunked=True),
            "huge-reply": server.stream("huge-reply", head(200, REPLY, HUGE)),
            "huge-error-500": server.stream("huge-error-500", head(500, {}, HUGE)),
            "slow-headers": server.trickle("slow-headers", b"HTTP/1.1 200 OK\r\nX-Slow: "),
            "slow-body-plain-200": server.trickle("slow-body-plain-200", head(200, {}, 1000)),
            "slow-body-reply": server.trickle("slow-body-reply", head(200, REPLY, 1000)),
            "reply-bad-utf8-header": server.raw(bad_utf8),
            "reply-not-an-event": server.raw(head(200, {"ce-specversion": "1.0", "ce-id": "x"}, 0)),
            "reply-structured-garbage": server.raw(head(200, STRUCTURED, 7) + b"garbage"),
            "reply-nested-too-deeply": server.raw(head(200, STRUCTURED, len(deep_reply)) + deep_reply),
            "garbage-body-200": server.raw(
                head(200, {"Content-Type": "text/plain"}, 1024) + os.urandom(1024)
            ),
            "reset-mid-body-200": server.reset(head(200, {}, 1000) + b"x" * 10),
            "reset-mid-reply": server.reset(head(200, REPLY, 1000) + b"x" * 10),
            "reset-before-answer": server.reset(b""),
            "garbage-status-line": server.raw(b"HELLO WORLD\r\n\r\n"),
            "bad-content-length": server.raw(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nabc"),
            "deep-data-structured": server.raw(head(204, {}, 0)),
        }
    )


def _subscriber_routes(folder: Path, server: RawServer) -> str:
    lines = ["defaults:", "  delivery: {retry: 1, backoffDelay: 100ms, timeout: PT1S}", "routes:"]
    for name, *_ in SUBSCRIBER_CASES:
        broker = "deep" if name.startswith("deep-") else "default"
        if name == "deep-data-structured":
            sink = f"{{uri: '{server.url}/{name}'}}"
            lines.append(
                f"  - {{name: {name}, broker: {broker}, start: earliest, subscriber: {sink}, delivery: {{format: json}}}}"
            )
            continue
        if name == "deep-data-command":
            sink = json.dumps({"command": [PY, str(folder / "reads-stdin.py")]})
        elif name.startswith("cmd-"):
            script = name[4:]
            sink = json.dumps({"command": [PY, str(folder / f"{script}.py"), str(folder / f"{script}.pids")]})
        else:
            sink = f"{{uri: '{server.url}/{name}'}}"
        if name in ("cmd-stdout-flood", "cmd-stderr-flood"):
            # 300 MB through a pipe takes more than the 1 s of the others on a busy machine.
            sink += ", delivery: {timeout: 20s}"
        lines.append(f"  - {{name: {name}, broker: {broker}, start: earliest, subscriber: {sink}}}")
    return "\n".join(lines) + "\n"


def _settled(db: Path, routes: list[tuple[str, str]]) -> bool:
    last, position, retrying = progress(db)
    return all(position.get(r, -1) >= last.get(b, 0) and r not in retrying for r, b in routes)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def subscriber_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker delivering one event to every hostile subscriber at once; the results."""
    folder = tmp_path_factory.mktemp("subscribers")
    for name, code in SCRIPTS.items():
        (folder / f"{name}.py").write_text(code)
    server = RawServer().start()
    _http_handlers(server)
    (folder / "routes.yaml").write_text(_subscriber_routes(folder, server))
    db = folder / "ev.db"
    with Store(str(db)) as store:
        event_log.append(
            store,
            "default",
            [
                make_event(
                    type="order.placed",
                    source="/shop",
                    id="hostile-1",
                    data=b'{"order": 1}',
                    datacontenttype="application/json",
                )
            ],
        )
        event_log.append(
            store,
            "deep",
            [
                make_event(
                    type="t",
                    source="/shop",
                    id="deep-1",
                    data=DEEP.encode(),
                    datacontenttype="application/json",
                )
            ],
        )
    routes = [(name, "deep" if name.startswith("deep-") else "default") for name, *_ in SUBSCRIBER_CASES]
    log = (folder / "worker.log").open("wb")
    proc = evroute(folder, "worker", "-v", stderr=log)
    results: dict[str, Any] = {"folder": folder, "server": server}
    try:
        wait_until(lambda: proc.poll() is not None or _settled(db, routes), 60, "every route settled")
        results["alive"] = proc.poll() is None
        results["hwm_mb"] = _vm_hwm_mb(proc.pid) if results["alive"] else None
    finally:
        results["exit"] = stop(proc)
        log.close()
        server.stop()
        for pids in folder.glob("*.pids"):  # a child that outlived its command belongs to the test
            for pid in pids.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    results["log"] = (folder / "worker.log").read_text(errors="replace")
    states: dict[str, dict[str, Any]] = {}
    for event_id in ("hostile-1", "deep-1"):
        code, out, err = run_cli(folder, "events", "show", event_id, "--json")
        assert code == 0, err
        states.update({r["route"]: r for r in json.loads(out)["routes"]})
    code, out, err = run_cli(folder, "dlq", "list", "--json")
    assert code == 0, err
    results["states"] = states
    results["dead"] = {d["route"]: d for d in json.loads(out)}
    results["integrity"] = integrity(db)
    yield results


def test_subscriber_run_kept_the_worker_well(subscriber_run: dict[str, Any]) -> None:
    r = subscriber_run
    assert r["alive"], r["log"][-3000:]
    assert r["exit"] == 0, r["log"][-3000:]
    assert r["integrity"] == "ok"
    assert "Traceback" not in r["log"] and "internal error" not in r["log"], r["log"][-5000:]
    # Hundreds of megabytes were on offer and 300 MB went through a pipe: memory stayed flat.
    assert r["hwm_mb"] < 200, r["hwm_mb"]
    server: RawServer = r["server"]
    for name in ("huge-plain-200", "huge-chunked-200", "huge-reply", "huge-error-500"):
        assert server.sent[name] < 64 * MIB, (name, server.sent[name])  # the worker stopped reading
    sent = {name: round(n / MIB, 1) for name, n in server.sent.items()}
    print(
        f"subscriber corpus: worker peak RSS {r['hwm_mb']:.0f} MB; MiB sent before the worker hung up: {sent}"
    )


@pytest.mark.parametrize(
    ("route", "state", "reason", "error"), SUBSCRIBER_CASES, ids=[c[0] for c in SUBSCRIBER_CASES]
)
def test_subscriber_responses(
    subscriber_run: dict[str, Any], route: str, state: str, reason: str | None, error: str | None
) -> None:
    got = subscriber_run["states"][route]
    assert got["state"] == state, got
    if state == "dead":
        letter = subscriber_run["dead"][route]
        assert letter["reason"] == reason, letter
        assert error is not None and error in letter["error"], letter
        assert "\n" not in letter["error"]
    else:
        assert route not in subscriber_run["dead"]


def test_timed_out_commands_leave_no_process_behind(subscriber_run: dict[str, Any]) -> None:
    pids = (subscriber_run["folder"] / "never-exits.pids").read_text().split()
    assert len(pids) == 2
    for pid in pids:  # the command and the child that ignores SIGTERM: the process group was killed
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ", 1)[1].startswith("Z"), pid


def test_case_count() -> None:
    total = (
        len(CLI_CASES)
        + len(EVENT_FILE_CASES)
        + len(ROUTES_CASES)
        + len(INGRESS_CASES)
        + len(SUBSCRIBER_CASES)
    )
    assert total >= 50
    print(f"bad input corpus: {total} cases")
