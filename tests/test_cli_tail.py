"""``evroute tail`` and ``evroute status --watch`` as real processes, on pipes and on a
pseudo-terminal, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_worker import drain, prepare, publish

from evroute.routes.load import load_routes_text
from evroute.store import Store

from receiver import Reply

ROOT = Path(__file__).resolve().parents[1]


def argv(folder: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evroute",
        "--db",
        str(folder / "ev.db"),
        "--routes",
        str(folder / "routes.yaml"),
        *args,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def read_lines(stream, count: int, timeout: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Up to ``count`` whole lines from a pipe, reading the file descriptor itself (a buffered
    reader would hide lines it already holds from ``select``)."""
    data = b""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return [line.decode() for line in data.split(b"\n")[:count] if line]


def test_tail_json_follows_outcomes_and_ctrl_c_exits_cleanly(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    calls: dict[str, int] = {}

    def second_time_lucky(r):  # type: ignore[no-untyped-def]
        calls[r.ce_id] = calls.get(r.ce_id, 0) + 1
        return Reply(503) if calls[r.ce_id] == 1 and r.ce_id.endswith("-0") else Reply(200)

    sink = receivers(second_time_lucky)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - {{name: svc, subscriber: '{sink.url}/', delivery: {{backoffDelay: 20ms}}}}\n"
    )
    rs = load_routes_text(routes.read_text(), str(routes))
    prepare(str(tmp_path / "ev.db"), rs)
    proc = subprocess.Popen(
        # --last: whether tail starts before or after the first outcomes are written, it shows them.
        argv(tmp_path, "tail", "--json", "--last", "100"),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ids = publish(str(tmp_path / "ev.db"), 3)
        drain(str(tmp_path / "ev.db"), rs)
        assert proc.stdout is not None
        lines = [json.loads(x) for x in read_lines(proc.stdout, 4, 10)]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == "" and out == ""
    assert len(lines) == 4
    assert set(lines[0]) == {
        "at",
        "route",
        "broker",
        "seq",
        "id",
        "type",
        "attempt",
        "outcome",
        "status",
        "latency_ms",
        "endpoint",
    }
    first = [x for x in lines if x["id"] == ids[0]]
    assert [(x["attempt"], x["outcome"], x["status"]) for x in first] == [
        (1, "retrying", 503),
        (2, "delivered", 200),
    ]
    assert {x["id"] for x in lines} == set(ids)
    assert all(x["endpoint"] == f"{sink.url}/" and x["broker"] == "default" for x in lines)


def test_tail_failed_only_and_a_human_line(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sink = receivers(lambda r: Reply(500) if r.ce_id.endswith("-1") else Reply(200))
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"routes:\n  - {{name: svc, subscriber: '{sink.url}/', delivery: {{retry: 0}}}}\n")
    rs = load_routes_text(routes.read_text(), str(routes))
    prepare(str(tmp_path / "ev.db"), rs)
    ids = publish(str(tmp_path / "ev.db"), 3)
    drain(str(tmp_path / "ev.db"), rs)
    proc = subprocess.Popen(
        argv(tmp_path, "tail", "--failed", "--last", "10"),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = read_lines(proc.stdout, 1, 10)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == "" and out == ""
    [text] = lines
    assert f" svc {ids[1]} order.placed → dead 500 " in text and "\x1b[" not in text  # no colour on a pipe


def test_status_watch_redraws_with_rates_and_shows_the_cursor_again(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes:\n  - {name: svc, subscriber: 'http://127.0.0.1:9/'}\n")
    with Store(str(tmp_path / "ev.db")):
        pass
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv(tmp_path, "status", "--watch", "0.3"),
        env=env(),
        stdout=follower,
        stderr=follower,
        stdin=follower,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 15
    try:
        while seen.count(b"delivered/s") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                seen += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.close(leader)
    assert proc.returncode == 0
    assert seen.count(b"delivered/s") >= 2 and b"\x1b[2J" in seen
    assert seen.startswith(b"\x1b[?25l") and seen.rstrip().endswith(b"\x1b[?25h")
    assert b"Aborted" not in seen and b"Traceback" not in seen


def _old_events(folder: Path, n: int) -> None:
    (folder / "routes.yaml").write_text(
        "settings: {retention: PT1S}\nroutes:\n  - {name: svc, subscriber: 'http://127.0.0.1:9/'}\n"
    )
    rs = load_routes_text((folder / "routes.yaml").read_text(), str(folder / "routes.yaml"))
    prepare(str(folder / "ev.db"), rs)
    publish(str(folder / "ev.db"), n)
    with Store(str(folder / "ev.db")) as store, store.write() as conn:
        conn.execute("UPDATE events SET published_at = published_at - 100")
        conn.execute("UPDATE cursors SET position = ?", (n,))


def test_gc_shows_a_progress_bar_on_a_terminal_and_never_on_a_pipe(tmp_path: Path) -> None:
    piped, tty = tmp_path / "piped", tmp_path / "tty"
    for folder in (piped, tty):
        folder.mkdir()
        _old_events(folder, 2500)
    plain = subprocess.run(argv(piped, "gc"), env=env(), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and plain.stderr == ""
    assert plain.stdout.startswith("deleted 2500 events")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv(tty, "gc"), env=env(), stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0 and out.decode().startswith("deleted 2500 events")
    assert b"deleting" in seen and b"100%" in seen
