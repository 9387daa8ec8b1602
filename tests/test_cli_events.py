"""`evroute events list`: the log as a table or as the JSON document of SPEC 7.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli as run

from evroute.clock import parse_time
from evroute.cloudevent import make_event
from evroute.store import Store
from evroute.store import log as event_log


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "ev.db")
    with Store(path) as s:
        event_log.append(
            s,
            "default",
            [
                make_event(
                    type="order.placed",
                    source="/shop",
                    id="o-1",
                    subject="eu-1",
                    time="2026-01-02T15:04:05Z",
                    data=b'{"order": 1}',
                    datacontenttype="application/json",
                    extensions={"tenant": "acme"},
                )
            ],
            now=1_767_366_245.5,
        )
        event_log.append(
            s,
            "order-broker",
            [make_event(type="order.cancelled", source="/shop", id="o-2")],
            now=1_767_366_246.0,
        )
        event_log.append(
            s,
            "default",
            [make_event(type="note", source="/ops", id="n-1", data=b"\xff\x00", datacontenttype="image/png")],
            now=1_767_366_247.0,
        )
    return path


def test_table_lists_every_broker_oldest_first(db: str) -> None:
    code, out, err = run("--db", db, "events", "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["seq", "broker", "published", "id", "type", "source", "subject"]
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["1", "default", "2026-01-02T15:04:05.500Z", "o-1", "order.placed", "/shop", "eu-1"],
        ["2", "order-broker", "2026-01-02T15:04:06.000Z", "o-2", "order.cancelled", "/shop"],
        ["3", "default", "2026-01-02T15:04:07.000Z", "n-1", "note", "/ops"],
    ]


def test_filters_and_limit(db: str) -> None:
    _, out, _ = run("--db", db, "events", "list", "--broker", "default", "--limit", "1")
    assert [line.split()[3] for line in out.splitlines()[2:]] == ["n-1"]
    _, out, _ = run("--db", db, "events", "list", "--type", "order.placed")
    assert [line.split()[3] for line in out.splitlines()[2:]] == ["o-1"]
    code, out, _ = run("--db", db, "events", "list", "--broker", "nothing-here")
    assert (code, out) == (0, "(none)\n")
    _, out, _ = run("--db", db, "events", "list", "--broker", "nothing-here", "--json")
    assert json.loads(out) == []


def test_json_shape(db: str) -> None:
    code, out, _ = run("--db", db, "events", "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [set(item) for item in doc] == [{"seq", "broker", "published_at", "event"}] * 3
    first, second, third = doc
    assert first == {
        "seq": 1,
        "broker": "default",
        "published_at": "2026-01-02T15:04:05.500Z",
        "event": {
            "specversion": "1.0",
            "id": "o-1",
            "source": "/shop",
            "type": "order.placed",
            "subject": "eu-1",
            "time": "2026-01-02T15:04:05Z",
            "datacontenttype": "application/json",
            "tenant": "acme",
            "data": {"order": 1},
        },
    }
    assert second["broker"] == "order-broker" and "data" not in second["event"]
    assert third["event"]["data_base64"] == "/wA="
    for item in doc:
        assert item["published_at"].endswith("Z") and parse_time(item["published_at"]) is not None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--broker", "Bad_Name"],
            2,
            "Error: --broker 'Bad_Name' is not a broker name (lower-case letters, digits and '-', starting with "
            "a letter or digit, at most 63 characters)\n",
        ),
        (["--limit", "0"], 2, None),
    ],
)
def test_bad_options(db: str, args: list[str], code: int, message: str | None) -> None:
    got, out, err = run("--db", db, "events", "list", *args)
    assert (got, out) == (code, "")
    if message is not None:
        assert err == message
    else:
        assert "--limit" in err and "0" in err


def test_missing_database_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    code, out, err = run("--db", str(path), "events", "list")
    assert (code, out) == (1, "")
    assert err == f"Error: database '{path}' does not exist (run `evroute init` or pass --db)\n"
    assert not path.exists()


def test_events_is_a_group_with_its_subcommands() -> None:
    code, out, _ = run("events", "--help")
    assert code == 0
    assert "list" in out
    code, _, err = run("events", "nope")
    assert code == 2 and "No such command 'nope'" in err
