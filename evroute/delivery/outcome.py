"""What one delivery attempt came to: an :class:`Outcome` value.

The HTTP and command sinks build outcomes; :mod:`evroute.delivery.policy` decides their
``kind``; the worker turns them into durable state (a cursor step, a retry row or a dead
letter) without looking at status codes itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from evroute.cloudevent import CloudEvent

BODY_KEEP = 1024  # bytes of a failure's response body (or stderr tail) kept with a dead letter


class Kind(enum.Enum):
    SUCCESS = "success"
    RETRIABLE = "retriable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    status: int | None  # HTTP status or process exit code; None when there was no response
    error: str | None  # one line, e.g. "HTTP 503", "timeout after 10s", "exit 3: boom", "hop limit"
    body: bytes | None  # first 1 KiB of a failed response body / last 1 KiB of a command's stderr
    reply: CloudEvent | None  # a reply to publish, already carrying evroutehops = parent + 1
    retry_after: float | None  # seconds, from Retry-After on a 429/503
    elapsed: float  # seconds the attempt took
    endpoint: str | None = None  # the endpoint of a consumer group (subscriber.uris) it went to

    @property
    def ok(self) -> bool:
        return self.kind is Kind.SUCCESS


def success(status: int, elapsed: float, reply: CloudEvent | None = None) -> Outcome:
    return Outcome(Kind.SUCCESS, status, None, None, reply, None, elapsed)


def failure(
    kind: Kind,
    error: str,
    elapsed: float,
    *,
    status: int | None = None,
    body: bytes | None = None,
    retry_after: float | None = None,
) -> Outcome:
    return Outcome(kind, status, error, body or None, None, retry_after, elapsed)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` squeezed onto one line of at most ``limit`` characters, for ``Outcome.error``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def seconds(value: float) -> str:
    """``10.0`` → ``"10s"``, ``0.25`` → ``"0.25s"`` (how timeouts are named in errors)."""
    return f"{value:g}s"


__all__ = ["BODY_KEEP", "Kind", "Outcome", "failure", "one_line", "seconds", "success"]
