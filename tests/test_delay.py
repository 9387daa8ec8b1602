"""Delayed delivery, the parts before the worker: the evroutedeliverat extension is checked
wherever an event comes in, and `publish --delay / --at` set it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from ingress_server import IngressThread

from evroute.cli import main
from evroute.clock import parse_time
from evroute.cloudevent import from_dict, make_event
from evroute.delay import deliver_at, held_until, stamp
from evroute.errors import InvalidEvent, InvalidInput
from evroute.store import Store
from evroute.store import log as event_log


def run(tmp_path: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation(input=stdin) as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_the_extension_must_be_an_rfc3339_time() -> None:
    ok = make_event(type="t", source="/s", extensions={"evroutedeliverat": "2026-12-01T09:00:00+01:00"})
    assert deliver_at(ok) == parse_time("2026-12-01T08:00:00Z")
    assert held_until(ok, 0.0) == deliver_at(ok)
    assert held_until(ok, 4e9) is None  # the time has passed: not held
    assert deliver_at(make_event(type="t", source="/s")) is None
    for bad in ("tomorrow", "2026-12-01", "2026-13-01T00:00:00Z", 5):
        with pytest.raises(InvalidEvent) as info:
            from_dict({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "evroutedeliverat": bad})
        assert info.value.message.startswith(
            "extension 'evroutedeliverat' must be an RFC 3339 timestamp such as 2026-12-01T09:00:00Z, got "
        )


def test_stamp_from_delay_or_at() -> None:
    assert stamp("90s", None, 1_000_000.0) == "1970-01-12T13:48:10.000Z"
    assert stamp(None, "2026-12-01T09:00:00+01:00", 0.0) == "2026-12-01T08:00:00.000Z"
    assert stamp(None, None, 0.0) is None
    with pytest.raises(InvalidInput, match="give --delay or --at, not both"):
        stamp("1s", "2026-12-01T09:00:00Z", 0.0)
    with pytest.raises(InvalidInput, match=r"--at 'soon' is not an RFC 3339 time"):
        stamp(None, "soon", 0.0)
    with pytest.raises(InvalidInput, match=r"--delay: bad duration 'ten'"):
        stamp("ten", None, 0.0)


def test_publish_delay_and_at_store_the_extension(tmp_path: Path) -> None:
    before = time.time()
    code, out, err = run(tmp_path, "publish", "--type", "reminder", "--id", "r1", "--delay", "10m")
    assert code == 0, err
    assert out.startswith("stored r1 seq 1, scheduled for ")
    code, out, err = run(
        tmp_path, "publish", "--type", "reminder", "--id", "r2", "--at", "2030-01-01T00:00:00Z"
    )
    assert code == 0 and out == "stored r2 seq 2, scheduled for 2030-01-01T00:00:00.000Z\n"
    with Store(str(tmp_path / "ev.db")) as store:
        first, second = (event_log.get(store, 1), event_log.get(store, 2))
    assert first is not None and second is not None
    due = deliver_at(first.event)
    assert due is not None and before + 600 - 0.001 <= due <= time.time() + 600  # to the millisecond
    assert second.event.attributes["evroutedeliverat"] == "2030-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "1s", "--at", "2030-01-01T00:00:00Z"], "Error: give --delay or --at, not both"),
        (
            ["--at", "next week"],
            "Error: --at 'next week' is not an RFC 3339 time (like 2026-12-01T09:00:00Z)",
        ),
        (
            ["--delay", "1s", "--ext", "evroutedeliverat=2030-01-01T00:00:00Z"],
            "Error: --ext evroutedeliverat and --delay/--at say the same thing: give one",
        ),
        (
            ["--ext", "evroutedeliverat=later"],
            "Error: extension 'evroutedeliverat' must be an RFC 3339 timestamp such as "
            "2026-12-01T09:00:00Z, got 'later'",
        ),
    ],
)
def test_publish_refuses_bad_delays_and_stores_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    code, _out, err = run(tmp_path, "publish", "--type", "t", *args)
    assert (code, err.strip()) == (2, message)
    assert not (tmp_path / "ev.db").exists()


def test_a_file_carries_its_own_delays(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    line = {
        "specversion": "1.0",
        "id": "a",
        "source": "/s",
        "type": "t",
        "evroutedeliverat": "2030-01-01T00:00:00Z",
    }
    events.write_text(
        json.dumps(line) + "\n" + json.dumps({**line, "id": "b", "evroutedeliverat": "x"}) + "\n"
    )
    code, _out, err = run(tmp_path, "publish", "--file", str(events))
    assert code == 2 and "line 2: extension 'evroutedeliverat' must be an RFC 3339 timestamp" in err
    code, _out, err = run(tmp_path, "publish", "--file", str(events), "--delay", "1m")
    assert code == 2 and "--delay/--at (set evroutedeliverat on each event of the file)" in err


def test_ingress_refuses_a_bad_delay_and_stores_a_good_one(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db") as srv:
        headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
        bad = httpx.post(srv.url + "/", headers={**headers, "ce-evroutedeliverat": "soon"})
        assert bad.status_code == 400
        assert "evroutedeliverat" in bad.json()["error"]
        good = httpx.post(srv.url + "/", headers={**headers, "ce-evroutedeliverat": "2030-01-01T00:00:00Z"})
        assert good.status_code == 202
        (row,) = event_log.listing(srv.store, limit=5)
        assert row.event.attributes["evroutedeliverat"] == "2030-01-01T00:00:00Z"


def test_events_show_and_status_before_the_worker_reads_a_delayed_event(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes: [{name: later, subscriber: 'http://127.0.0.1:9/'}]\n")
    assert run(tmp_path, "routes", "check")[0] == 0
    code, out, err = run(tmp_path, "publish", "--type", "t", "--id", "r1", "--at", "2030-01-01T00:00:00Z")
    assert code == 0, err
    code, out, err = run(tmp_path, "events", "show", "r1")
    assert code == 0, err
    assert "scheduled for 2030-01-01T00:00:00.000Z (in " in out
    code, out, err = run(tmp_path, "events", "show", "r1", "--json")
    (entry,) = json.loads(out)["routes"]
    assert (entry["state"], entry["due"]) == ("scheduled", "2030-01-01T00:00:00.000Z")
    code, out, err = run(tmp_path, "status", "--json")
    (row,) = json.loads(out)["routes"]
    # Not on the schedule yet (no worker has read it): pending in the lag, nothing scheduled.
    assert (row["lag"], row["scheduled"], row["throttled"], row["endpoints"]) == (1, 0, False, None)
