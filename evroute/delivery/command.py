"""Command subscribers (SPEC 5.2): run an argv, hand it the event, judge its exit status.

- The argv is executed directly, never through a shell, so nothing in an event (attributes,
  data) is ever interpreted as shell syntax. The event travels as structured JSON on stdin,
  with ``CE_ID``, ``CE_SOURCE``, ``CE_TYPE``, ``CE_SUBJECT``, ``CE_TIME`` (those present),
  ``EVROUTE_ROUTE``, ``EVROUTE_ATTEMPT`` and ``EVROUTE_BROKER`` added to the environment,
  and ``TRACEPARENT``/``TRACESTATE`` (W3C trace context) when the event has a trace.
  Environment values cannot hold NUL characters; any are dropped there (stdin is exact).
- The process starts a new session (its own process group). On timeout, or if the attempt is
  cancelled, the whole group is killed with SIGKILL, so helpers it spawned die with it.
- Output is collected as it arrives and never buffered without bound: stdout up to
  ``max_reply_bytes`` (the rest is read and discarded), stderr as a rolling last 1 KiB.
- Exit 0 whose stdout is one JSON object with ``specversion`` is a reply; if that object is not
  a valid CloudEvent the attempt fails permanently (``invalid reply: …``), as for HTTP. Any
  other stdout, and stdout over the limit, is ignored.
- A program that cannot be started (not found, not executable, bad working directory) is a
  permanent failure: retrying will not make it appear.
- A process killed by a signal reports status 128 + the signal number, as shells do.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Collection, Iterable, Mapping
from typing import cast

from evroute.cloudevent import CloudEvent, from_dict, to_json
from evroute.delivery.outcome import BODY_KEEP, Kind, Outcome, failure, one_line, seconds, success
from evroute.delivery.policy import accept_reply, classify_exit, invalid_reply, oversized_reply
from evroute.errors import InvalidEvent
from evroute.routes.model import Subscriber

MAX_REPLY_BYTES = 1 << 20  # stdout kept for a reply; more than this is read and thrown away
EXIT_GRACE = 1.0  # after the process exits, how long its pipes may stay open (a leftover child)
KILL_WAIT = 5.0  # how long to wait for a SIGKILLed process to be reaped

_CE_ENV = (
    ("CE_ID", "id"),
    ("CE_SOURCE", "source"),
    ("CE_TYPE", "type"),
    ("CE_SUBJECT", "subject"),
    ("CE_TIME", "time"),
)


def command_environment(
    event: CloudEvent,
    *,
    route: str,
    broker: str,
    attempt: int,
    base: Mapping[str, str] | None = None,
    allow: Iterable[str] | None = None,
    hide: Collection[str] = (),
    trace: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a command subscriber runs with (SPEC 5.2): ``base`` (the worker's) less
    the names in ``hide``, or only the names in ``allow``; plus the event's CE_* and EVROUTE_*."""
    source = os.environ if base is None else base
    if allow is not None:
        env = {name: source[name] for name in allow if name in source}
    else:
        env = {name: value for name, value in source.items() if name not in hide}
    # The attempt's W3C trace context, as OpenTelemetry's environment carrier names it; never
    # the worker's own (a TRACEPARENT it was started with belongs to another trace).
    env.pop("TRACEPARENT", None)
    env.pop("TRACESTATE", None)
    for key, text in (trace or {}).items():
        env[key.upper()] = text
    for var, attr in _CE_ENV:
        value = event.attributes.get(attr)
        if value is not None:
            env[var] = str(value).replace("\x00", "")
    env["EVROUTE_ROUTE"] = route
    env["EVROUTE_ATTEMPT"] = str(attempt)
    env["EVROUTE_BROKER"] = broker
    return env


class _Collector(asyncio.SubprocessProtocol):
    """Takes output as the pipes deliver it: no reader can fall behind and no buffer grows."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stdout_cap: int) -> None:
        self.stdout = bytearray()
        self.stdout_total = 0
        self.stdout_cap = stdout_cap
        self.stderr = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        if fd == 1:
            self.stdout_total += len(chunk)
            room = self.stdout_cap - len(self.stdout)
            if room > 0:
                self.stdout += chunk[:room]
        elif fd == 2:
            self.stderr += chunk
            if len(self.stderr) > BODY_KEEP:
                del self.stderr[:-BODY_KEEP]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def stdout_complete(self) -> bool:
        return self.stdout_total <= self.stdout_cap


async def deliver_command(
    subscriber: Subscriber,
    event: CloudEvent,
    *,
    route: str,
    broker: str,
    attempt: int,
    timeout: float | None,
    max_reply_bytes: int = MAX_REPLY_BYTES,
    max_event_bytes: int | None = None,
    trace: Mapping[str, str] | None = None,
) -> Outcome:
    """Run the subscriber's command once for ``event``; never raises for delivery faults.

    stdout is kept up to ``max_reply_bytes``; a reply event over ``max_event_bytes`` is an
    invalid reply, and so is stdout that begins as a CloudEvent but runs past the cap."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    def elapsed() -> float:
        return loop.time() - started

    argv = list(subscriber.command or ())
    if not argv:
        return failure(Kind.PERMANENT, "the command is empty", elapsed())
    env = command_environment(
        event,
        route=route,
        broker=broker,
        attempt=attempt,
        allow=subscriber.env,
        hide=subscriber.hidden_env,
        trace=trace,
    )
    if "PATH" not in env and os.sep not in argv[0]:
        # exec searches the child's PATH; an allowlist without PATH still runs the program found here
        argv[0] = shutil.which(argv[0]) or argv[0]
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _Collector(loop, max_reply_bytes),
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=subscriber.cwd,
            env=env,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        return failure(Kind.PERMANENT, _start_error(argv[0], subscriber.cwd, exc), elapsed())
    pid = transport.get_pid()
    try:
        stdin = cast("asyncio.WriteTransport | None", transport.get_pipe_transport(0))
        # Not an isinstance check: uvloop's pipe transports do not derive from asyncio's classes.
        if stdin is not None:
            payload = to_json(event)
            try:
                # A child that exits without reading stdin makes this fail with EPIPE later; the
                # transport reports that to pipe_connection_lost, which has nothing to do about it.
                stdin.write(payload)
                stdin.close()
            except (RuntimeError, OSError):
                # uvloop refuses the write outright when the child already exited or closed its
                # stdin ("the handler is closed"): not a delivery fault, the exit status decides.
                pass
        limit = timeout if timeout is not None and timeout > 0 else None
        done, _ = await asyncio.wait({proto.exited}, timeout=limit)
        if not done:
            _kill_group(pid)
            await asyncio.wait({proto.exited}, timeout=KILL_WAIT)
            return failure(
                Kind.RETRIABLE,
                f"timeout after {seconds(limit or 0)}",
                elapsed(),
                body=bytes(proto.stderr),
            )
        # The last output may still be in the pipes; a background child that inherited them may
        # keep them open forever, so wait a moment, not until they close.
        await asyncio.wait({proto.closed}, timeout=EXIT_GRACE)
    except BaseException:
        # Cancelled (the worker is stopping): leave no process behind, and reap it before
        # the loop that watches it can go away.
        _kill_group(pid)
        await asyncio.wait({proto.exited}, timeout=KILL_WAIT)
        raise
    finally:
        transport.close()
    code = transport.get_returncode()
    assert code is not None  # process_exited has fired
    return _judge(event, code, proto, elapsed(), max_event_bytes)


def _judge(
    event: CloudEvent, code: int, proto: _Collector, elapsed: float, max_event_bytes: int | None
) -> Outcome:
    status = code if code >= 0 else 128 - code
    kind = classify_exit(status)
    if kind is not Kind.SUCCESS:
        if code < 0:
            error = f"killed by {_signal_name(-code)}"
        else:
            error = f"exit {code}"
        last = _last_line(bytes(proto.stderr))
        if last:
            error += f": {last}"
        return failure(kind, one_line(error), elapsed, status=status, body=bytes(proto.stderr))
    if not proto.stdout_complete:
        head = bytes(proto.stdout).lstrip()
        if head.startswith(b"{") and b'"specversion"' in head:
            return oversized_reply(
                "stdout", proto.stdout_cap, max_event_bytes, status=status, elapsed=elapsed, raw=head
            )
        return success(status, elapsed)  # output, not a reply
    text = bytes(proto.stdout).strip()
    if not text.startswith(b"{"):
        return success(status, elapsed)
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or nested past parsing
        return success(status, elapsed)
    if not isinstance(obj, dict) or "specversion" not in obj:
        return success(status, elapsed)
    try:
        reply = from_dict(obj)
    except InvalidEvent as exc:
        return invalid_reply(str(exc), status=status, elapsed=elapsed, raw=text)
    return accept_reply(
        event, reply, status=status, elapsed=elapsed, raw=text, max_event_bytes=max_event_bytes
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # start_new_session: the process group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(stderr: bytes) -> str:
    for line in reversed(stderr.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return one_line(line, 200)
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _start_error(program: str, cwd: str | None, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        if cwd is not None and (exc.filename == cwd or not os.path.isdir(cwd)):
            return one_line(f"cannot start {program!r}: working directory {cwd!r} does not exist")
        return one_line(f"cannot start {program!r}: program not found")
    if isinstance(exc, PermissionError):
        return one_line(f"cannot start {program!r}: permission denied (is it executable?)")
    if isinstance(exc, OSError):
        return one_line(f"cannot start {program!r}: {exc.strerror or exc}")
    return one_line(f"cannot start {program!r}: {exc}")


__all__ = ["MAX_REPLY_BYTES", "command_environment", "deliver_command"]
