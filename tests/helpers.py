"""What many test modules do the same way: run the CLI in-process or as a process, wait for a
condition, pick a free port, stop a worker. Import it like ``receiver``: ``from helpers import …``."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from evroute.cli import main
from evroute.cloudevent import CloudEvent, make_event

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_cli(
    *args: str, input: bytes | str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``evroute ARGS`` through the real entry point (one error path): exit status, stdout, stderr.

    ``env`` is set in the environment for the run (as click's ``CliRunner.isolation`` does)."""
    evroute_logger = logging.getLogger("evroute")
    saved = (evroute_logger.handlers[:], evroute_logger.level, evroute_logger.propagate)
    runner = CliRunner()
    try:
        with runner.isolation(input=input, env=env) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        # `worker` points the evroute logger at this run's stderr; later tests must not log there.
        evroute_logger.handlers[:], evroute_logger.level, evroute_logger.propagate = saved
    return code, out.getvalue().decode(), err.getvalue().decode()


def evroute_env(**extra: str) -> dict[str, str]:
    """This environment, with the evroute under test importable, plus ``extra``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def evroute_argv(folder: Path, *args: str) -> list[str]:
    """``python -m evroute --db folder/ev.db --routes folder/routes.yaml ARGS``."""
    return [
        PY,
        "-m",
        "evroute",
        "--db",
        str(folder / "ev.db"),
        "--routes",
        str(folder / "routes.yaml"),
        *args,
    ]


def evroute(
    folder: Path, *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.Popen[bytes]:
    """:func:`evroute_argv` as a process in ``folder``."""
    return subprocess.Popen(
        evroute_argv(folder, *args),
        env=evroute_env() if env is None else env,
        cwd=folder,
        **kw,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM and wait: the worker finishes in-flight deliveries and exits (0 when all is well)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"the worker did not stop within {timeout:g}s of SIGTERM") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition", interval: float = 0.02
) -> bool:
    """Poll ``predicate`` until it holds (True), or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    if predicate():
        return True
    raise AssertionError(f"{what}: not within {timeout:g}s")


def progress(db: Path) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Read-only, beside a running worker: each broker's last seq, each route's cursor, and the
    routes that have retries scheduled."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        last = dict(conn.execute("SELECT broker, max(seq) FROM events GROUP BY broker").fetchall())
        position = dict(conn.execute("SELECT route, position FROM cursors").fetchall())
        retrying = {r[0] for r in conn.execute("SELECT DISTINCT route FROM retries")}
    finally:
        conn.close()
    return last, position, retrying


def json_event(type: str, id: str, payload: object, source: str = "/shop") -> CloudEvent:
    """An event carrying ``payload`` as JSON data (datacontenttype application/json)."""
    return make_event(
        type=type, source=source, id=id, data=json.dumps(payload).encode(), datacontenttype="application/json"
    )
