"""Command delivery with real subprocesses: small Python scripts written into tmp_path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_until

from evroute.cloudevent import HOPS, CloudEvent, make_event, to_dict, to_json
from evroute.delivery import deliver, new_session
from evroute.delivery.command import deliver_command
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import HOP_LIMIT
from evroute.routes.model import Delivery, Subscriber


def script(tmp_path: Path, name: str, body: str) -> Subscriber:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return Subscriber(command=(sys.executable, name), cwd=str(tmp_path))


def event(**attrs: object) -> CloudEvent:
    return make_event(
        type="order.placed",
        source="/shop",
        id="order-1",
        subject="eu-1",
        time="2024-05-01T10:00:00Z",
        data=b'{"order": 1}',
        datacontenttype="application/json",
    ).with_attributes(**attrs)  # type: ignore[arg-type]


def run(
    sub: Subscriber,
    ev: CloudEvent | None = None,
    *,
    timeout: float = 30.0,
    attempt: int = 1,
    max_reply_bytes: int | None = None,
    max_event_bytes: int | None = None,
) -> Outcome:
    async def main() -> Outcome:
        if max_reply_bytes is not None:
            return await deliver_command(
                sub,
                ev or event(),
                route="audit",
                broker="shop",
                attempt=attempt,
                timeout=timeout,
                max_reply_bytes=max_reply_bytes,
            )
        session = new_session()
        try:
            return await deliver(
                sub,
                ev or event(),
                route="audit",
                broker="shop",
                attempt=attempt,
                delivery=Delivery(timeout=timeout),
                headers={"Authorization": "not for commands"},
                signing_secret=None,
                session=session,
                max_event_bytes=max_event_bytes,
            )
        finally:
            await session.close()

    return asyncio.run(main())


def gone(pid: int) -> bool:
    """No such process, or only a zombie left for init to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


DUMP = """
    import json, os, sys
    stdin = sys.stdin.buffer.read().decode()
    keys = ["CE_ID", "CE_SOURCE", "CE_TYPE", "CE_SUBJECT", "CE_TIME",
            "EVROUTE_ROUTE", "EVROUTE_ATTEMPT", "EVROUTE_BROKER", "EVROUTE_TEST_MARK"]
    with open("seen.json", "w") as f:
        json.dump({"stdin": stdin, "env": {k: os.environ.get(k) for k in keys},
                   "argv": sys.argv[1:], "cwd": os.getcwd()}, f)
"""


def test_event_on_stdin_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROUTE_TEST_MARK", "inherited")
    sub = script(tmp_path, "dump.py", DUMP)
    ev = event(tenant="acme")
    outcome = run(sub, ev, attempt=4)
    assert (outcome.kind, outcome.status, outcome.error, outcome.reply, outcome.body) == (
        Kind.SUCCESS,
        0,
        None,
        None,
        None,
    )
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["stdin"].encode() == to_json(ev)
    assert json.loads(seen["stdin"]) == to_dict(ev)
    assert seen["env"] == {
        "CE_ID": "order-1",
        "CE_SOURCE": "/shop",
        "CE_TYPE": "order.placed",
        "CE_SUBJECT": "eu-1",
        "CE_TIME": "2024-05-01T10:00:00Z",
        "EVROUTE_ROUTE": "audit",
        "EVROUTE_ATTEMPT": "4",
        "EVROUTE_BROKER": "shop",
        "EVROUTE_TEST_MARK": "inherited",
    }
    assert Path(seen["cwd"]).resolve() == tmp_path.resolve()


def test_absent_attributes_are_not_in_the_environment(tmp_path: Path) -> None:
    sub = script(tmp_path, "dump.py", DUMP)
    bare = make_event(type="ping", source="/s", id="p-1").with_attributes(time=None)
    assert run(sub, bare).kind is Kind.SUCCESS
    env = json.loads((tmp_path / "seen.json").read_text())["env"]
    assert env["CE_SUBJECT"] is None and env["CE_TIME"] is None
    assert (env["CE_ID"], env["CE_TYPE"]) == ("p-1", "ping")


@pytest.mark.parametrize(
    ("code", "kind"),
    [(0, Kind.SUCCESS), (65, Kind.PERMANENT), (75, Kind.RETRIABLE), (3, Kind.RETRIABLE)],
)
def test_exit_codes(tmp_path: Path, code: int, kind: Kind) -> None:
    sub = script(
        tmp_path,
        "exit.py",
        f"""
        import sys
        sys.stdin.read()
        if {code}:
            print("first line", file=sys.stderr)
            print("reason {code}", file=sys.stderr)
        sys.exit({code})
        """,
    )
    outcome = run(sub)
    assert (outcome.kind, outcome.status) == (kind, code)
    if code == 0:
        assert (outcome.error, outcome.body) == (None, None)
    else:
        assert outcome.error == f"exit {code}: reason {code}"
        assert outcome.body == f"first line\nreason {code}\n".encode()


def test_stderr_keeps_the_last_kib(tmp_path: Path) -> None:
    sub = script(
        tmp_path,
        "noisy.py",
        """
        import sys
        for i in range(2000):
            sys.stderr.write(f"progress {i}\\n")
        sys.stderr.write("fatal: disk full\\n")
        sys.exit(1)
        """,
    )
    outcome = run(sub)
    assert outcome.kind is Kind.RETRIABLE
    assert outcome.error == "exit 1: fatal: disk full"
    assert outcome.body is not None and len(outcome.body) == 1024
    assert outcome.body.endswith(b"progress 1999\nfatal: disk full\n")


def test_killed_by_a_signal(tmp_path: Path) -> None:
    sub = script(tmp_path, "die.py", "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    outcome = run(sub)
    assert (outcome.kind, outcome.status, outcome.error) == (Kind.RETRIABLE, 128 + 15, "killed by SIGTERM")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    sub = script(
        tmp_path,
        "stuck.py",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open("pids.tmp", "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        os.rename("pids.tmp", "pids")
        print("waiting", file=sys.stderr, flush=True)
        time.sleep(120)
        """,
    )
    outcome = run(sub, timeout=1.5)
    assert (outcome.kind, outcome.status, outcome.error) == (Kind.RETRIABLE, None, "timeout after 1.5s")
    assert outcome.body == b"waiting\n"
    assert 1.4 <= outcome.elapsed < 8
    leader, child = map(int, (tmp_path / "pids").read_text().split())
    assert wait_until(lambda: gone(leader), 10, "the command gone after its timeout")
    assert wait_until(lambda: gone(child), 10, "the command's child gone after the timeout")


def test_cancelling_the_attempt_kills_the_process_group(tmp_path: Path) -> None:
    sub = script(
        tmp_path,
        "stuck.py",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open("pids.tmp", "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        os.rename("pids.tmp", "pids")
        time.sleep(120)
        """,
    )

    async def main() -> None:
        task = asyncio.create_task(
            deliver_command(sub, event(), route="audit", broker="shop", attempt=1, timeout=60)
        )
        pids = tmp_path / "pids"
        for _ in range(500):
            if pids.exists():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    leader, child = map(int, (tmp_path / "pids").read_text().split())
    assert wait_until(lambda: gone(leader), 10) and wait_until(lambda: gone(child), 10)


def test_a_background_child_holding_stdout_does_not_hold_the_delivery(tmp_path: Path) -> None:
    sub = script(
        tmp_path,
        "daemon.py",
        """
        import subprocess, sys
        sys.stdin.read()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        print("started")
        """,
    )
    try:
        outcome = run(sub, timeout=30)
        assert (outcome.kind, outcome.status) == (Kind.SUCCESS, 0)
        assert outcome.elapsed < 5
    finally:
        pid_file = tmp_path / "child.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def reply_json(**attrs: object) -> str:
    reply = make_event(
        type="order.audited",
        source="/audit",
        id="audit-1",
        time="2024-05-01T10:00:01Z",
        data=b'{"ok": true}',
        datacontenttype="application/json",
    ).with_attributes(**attrs)  # type: ignore[arg-type]
    return to_json(reply).decode()


def test_stdout_event_is_a_reply(tmp_path: Path) -> None:
    sub = script(tmp_path, "reply.py", f"import sys\nsys.stdin.read()\nprint({reply_json()!r})\n")
    outcome = run(sub, event(**{HOPS: 2}))
    assert (outcome.kind, outcome.status, outcome.error) == (Kind.SUCCESS, 0, None)
    assert outcome.reply is not None
    assert outcome.reply.attributes[HOPS] == 3
    assert (outcome.reply.id, outcome.reply.type, outcome.reply.data) == (
        "audit-1",
        "order.audited",
        b'{"ok":true}',
    )


def test_stdout_reply_past_the_hop_limit(tmp_path: Path) -> None:
    sub = script(tmp_path, "reply.py", f"print({reply_json()!r})\n")
    outcome = run(sub, event(**{HOPS: str(HOP_LIMIT)}))
    assert (outcome.kind, outcome.status, outcome.error, outcome.reply) == (
        Kind.PERMANENT,
        0,
        "hop limit",
        None,
    )


def test_stdout_event_that_does_not_validate_is_an_invalid_reply(tmp_path: Path) -> None:
    sub = script(tmp_path, "bad.py", 'print(\'{"specversion": "1.0", "id": "x", "type": "t"}\')\n')
    outcome = run(sub)
    assert (outcome.kind, outcome.status, outcome.error) == (
        Kind.PERMANENT,
        0,
        "invalid reply: missing required attribute 'source'",
    )


@pytest.mark.parametrize(
    "stdout",
    ["done\n", '{"status": "ok"}\n', "[1, 2]\n", '{"specversion": "1.0"} trailing\n', ""],
)
def test_other_stdout_is_ignored(tmp_path: Path, stdout: str) -> None:
    sub = script(tmp_path, "chatty.py", f"import sys\nsys.stdout.write({stdout!r})\n")
    outcome = run(sub)
    assert (outcome.kind, outcome.reply) == (Kind.SUCCESS, None)


def test_stdout_flood_is_drained_without_growing_memory(tmp_path: Path) -> None:
    sub = script(
        tmp_path,
        "flood.py",
        f"""
        import sys
        sys.stdout.write({reply_json()!r})
        block = b"y" * (1 << 20)
        for _ in range(48):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
        """,
    )

    async def main() -> tuple[Outcome, int]:
        tracemalloc.start()
        try:
            outcome = await deliver_command(
                sub, event(), route="audit", broker="shop", attempt=1, timeout=60, max_reply_bytes=65536
            )
            return outcome, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    outcome, peak = asyncio.run(main())
    # it began as a CloudEvent and ran past the cap: a reply too large to take
    assert (outcome.kind, outcome.status, outcome.reply, outcome.error) == (
        Kind.PERMANENT,
        0,
        None,
        "invalid reply: stdout is over 65536 bytes",
    )
    assert peak < 8 << 20, f"peak {peak} bytes while 48 MiB went through stdout"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (
            lambda tmp: Subscriber(command=("/nonexistent/evroute-handler",), cwd=str(tmp)),
            "cannot start '/nonexistent/evroute-handler': program not found",
        ),
        (
            lambda tmp: Subscriber(command=("evroute-no-such-program-on-path", "x"), cwd=str(tmp)),
            "cannot start 'evroute-no-such-program-on-path': program not found",
        ),
        (
            lambda tmp: Subscriber(command=(sys.executable, "-c", "pass"), cwd=str(tmp / "missing")),
            "working directory",
        ),
    ],
)
def test_program_that_cannot_start_is_permanent(
    tmp_path: Path, make: Callable[[Path], Subscriber], error: str
) -> None:
    outcome = run(make(tmp_path))
    assert (outcome.kind, outcome.status, outcome.reply) == (Kind.PERMANENT, None, None)
    assert outcome.error is not None and error in outcome.error


def test_program_that_is_not_executable_is_permanent(tmp_path: Path) -> None:
    handler = tmp_path / "handler.sh"
    handler.write_text("#!/bin/sh\nexit 0\n")
    handler.chmod(0o644)
    if os.access(handler, os.X_OK):  # running as a user that may execute anything
        pytest.skip("this user can execute files without the executable bit")
    outcome = run(Subscriber(command=(str(handler),), cwd=str(tmp_path)))
    assert outcome.kind is Kind.PERMANENT
    assert outcome.error == f"cannot start {str(handler)!r}: permission denied (is it executable?)"


def test_event_content_is_never_run_by_a_shell(tmp_path: Path) -> None:
    sub = script(tmp_path, "dump.py", DUMP)
    sub = Subscriber(command=(*(sub.command or ()), "$(touch argv-pwned)", "`touch argv-pwned`"), cwd=sub.cwd)
    nasty = make_event(
        type="order.placed;touch type-pwned",
        source="/shop/$(touch source-pwned)",
        id="`touch id-pwned`",
        subject="x; touch subject-pwned; $(touch subject2-pwned) | touch pipe-pwned && touch and-pwned",
        data=b'{"cmd": "$(touch data-pwned)", "b": "`touch data2-pwned`"}',
        datacontenttype="application/json",
        extensions={"note": "'; touch ext-pwned; echo '"},
    )
    outcome = run(sub, nasty)
    assert outcome.kind is Kind.SUCCESS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.py", "seen.json"]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["argv"] == ["$(touch argv-pwned)", "`touch argv-pwned`"]
    assert seen["env"]["CE_ID"] == "`touch id-pwned`"
    assert seen["env"]["CE_TYPE"] == "order.placed;touch type-pwned"
    assert seen["env"]["CE_SUBJECT"] == nasty.subject
    assert seen["stdin"].encode() == to_json(nasty)


def test_stdout_reply_over_max_event_bytes_is_an_invalid_reply(tmp_path: Path) -> None:
    big = to_json(make_event(type="order.audited", source="/audit", id="big-1", data=b"z" * 5000)).decode()
    sub = script(tmp_path, "big.py", f"import sys\nsys.stdin.read()\nprint({big!r})\n")

    over = run(sub, max_event_bytes=4096)
    assert (over.kind, over.status, over.reply) == (Kind.PERMANENT, 0, None)
    assert over.error is not None and over.error.startswith("invalid reply: event is ")
    assert over.error.endswith(" bytes, over maxEventBytes 4096")
    # stdout far past the limit that begins as a CloudEvent is a reply that cannot be taken
    far = run(sub, max_event_bytes=1000)
    assert (far.kind, far.error) == (
        Kind.PERMANENT,
        "invalid reply: stdout is over 2000 bytes (maxEventBytes 1000)",
    )
    under = run(sub, max_event_bytes=8192)
    assert under.kind is Kind.SUCCESS and under.reply is not None and under.reply.id == "big-1"


def test_stdout_past_the_cap_that_is_no_event_is_plain_output(tmp_path: Path) -> None:
    sub = script(tmp_path, "chatty.py", "import sys\nsys.stdout.write('log line\\n' * 30000)\n")
    outcome = run(sub, max_reply_bytes=65536)
    assert (outcome.kind, outcome.reply, outcome.error) == (Kind.SUCCESS, None, None)
