"""The long-running processes (worker, console) run on uvloop, a run-time dependency on
CPython outside Windows; a plain publish never imports it."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from pathlib import Path

import uvloop
from helpers import PY, evroute_env, free_port

from evroute import eventloop


def test_run_uses_uvloop_without_changing_the_global_policy() -> None:
    async def which() -> type:
        return type(asyncio.get_running_loop())

    policy = type(asyncio.get_event_loop_policy())
    assert eventloop.run(which()) is uvloop.Loop
    assert type(asyncio.get_event_loop_policy()) is policy  # other code in the process is unaffected


def test_run_returns_the_result_and_raises_the_error() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    async def value() -> int:
        return 7

    assert eventloop.run(value()) == 7
    try:
        eventloop.run(fail())
    except ValueError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("the coroutine's error was swallowed")


def _run_script(tmp_path: Path, body: str) -> list[str]:
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: r\n    subscriber: http://127.0.0.1:9/\n")
    args = f'["--db", {str(tmp_path / "ev.db")!r}, "--routes", {str(tmp_path / "routes.yaml")!r}]'
    script = textwrap.dedent(
        f"""
        import os, signal, socket, sys, threading, time
        from evroute.cli import main
        ARGS = {args}
        def call(*more):
            try:
                main([*ARGS, *more])
            except SystemExit:
                pass
        """
    ) + textwrap.dedent(body)
    done = subprocess.run(
        [PY, "-c", script], capture_output=True, text=True, env=evroute_env(), timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_publish_never_imports_uvloop_and_the_worker_does(tmp_path: Path) -> None:
    lines = _run_script(
        tmp_path,
        """
        call("publish", "--type", "a")
        call("publish", "--type", "b")
        print("publish", "uvloop" in sys.modules)
        call("worker", "--drain", "-q")
        print("worker", "uvloop" in sys.modules)
        """,
    )
    assert lines[-2:] == ["publish False", "worker True"], lines


def test_the_console_runs_on_uvloop(tmp_path: Path) -> None:
    port = free_port()
    lines = _run_script(
        tmp_path,
        f"""
        call("publish", "--type", "a")
        print("before", "uvloop" in sys.modules)
        def stop_when_listening():
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", {port}), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=stop_when_listening, daemon=True).start()
        call("ui", "--listen", "127.0.0.1:{port}", "--token", "t")
        print("ui", "uvloop" in sys.modules)
        """,
    )
    assert "before False" in lines and lines[-1] == "ui True", lines
