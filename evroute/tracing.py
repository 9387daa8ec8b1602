"""W3C trace context for events, and the switch for exporting spans.

Every event carries the CloudEvents distributed-tracing extension: ``traceparent`` (and, when
there is one, ``tracestate``). It is validated like any attribute (:func:`check`), given to
events that arrive without one (:func:`ensure`, :func:`from_request`), and handed on at every
hop: the W3C ``traceparent``/``tracestate`` headers of an HTTP delivery, ``TRACEPARENT`` and
``TRACESTATE`` in a command's environment (:func:`start_attempt`), and the trace of a reply
(:func:`finish_attempt`).

This module imports nothing of OpenTelemetry. Spans are exported only when an OTLP endpoint is
configured (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``settings.tracing.endpoint``) and the ``evroute[otel]`` extra is installed; then
:func:`setup` loads :mod:`evroute.otlp`, and each hook below records its span there. Off, each
hook is a dictionary lookup or two.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent
    from evroute.delivery.outcome import Outcome

# Neither `logging` nor a compiled pattern is loaded at import: a single `evroute publish`
# imports this module, and its start-up time is measured.

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_TRACESTATE = 512
MAX_MEMBERS = 32


# --------------------------------------------------------------------------- the trace context


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    return (
        # version-traceid-parentid-flags, lower-case hex (W3C Trace Context level 1, 3.2). A later
        # version may append fields after a '-': the first four are read the same way.
        re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?\Z"),
        # tracestate list-member key and value (3.3.1.3)
        re.compile(r"[a-z0-9][a-z0-9_\-*/]{0,255}(?:@[a-z][a-z0-9_\-*/]{0,13})?\Z"),
        re.compile(r"[ -+\--<>-~]{0,255}[!-+\--<>-~]\Z"),  # printable, no ',' or '=', no trailing space
    )


def parse(value: object) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` of a valid ``traceparent``, or None."""
    if not isinstance(value, str):
        return None
    m = _patterns()[0].match(value)
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def tracestate_problem(value: object) -> str | None:
    """Why ``value`` is not a W3C ``tracestate`` list, or None when it is one."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_TRACESTATE:
        return f"is longer than {MAX_TRACESTATE} characters"
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if len(members) > MAX_MEMBERS:
        return f"has more than {MAX_MEMBERS} list members"
    _, state_key, state_value = _patterns()
    seen: set[str] = set()
    for member in members:
        key, sep, val = member.partition("=")
        if not sep or not state_key.match(key) or not state_value.match(val):
            return f"member {member[:40]!r} is not key=value (W3C Trace Context tracestate)"
        if key in seen:
            return f"names {key!r} twice"
        seen.add(key)
    return None


def check(attributes: Mapping[str, object], where: str = "") -> None:
    """Raise InvalidEvent when the event's trace context is malformed.

    A ``traceparent`` the publisher sent is part of its event: a malformed one is refused
    rather than silently replaced, so the mistake shows where it is made.
    """
    from evroute.errors import InvalidEvent

    parent = attributes.get(TRACEPARENT)
    if parent is not None and parse(parent) is None:
        raise InvalidEvent(
            f"{where}attribute 'traceparent' must be a W3C traceparent like "
            f"00-<32 hex trace id>-<16 hex span id>-01 (lower-case, ids not all zero), got {str(parent)[:80]!r}"
        )
    state = attributes.get(TRACESTATE)
    if state is not None:
        if parent is None:
            raise InvalidEvent(f"{where}attribute 'tracestate' needs a 'traceparent' beside it")
        problem = tracestate_problem(state)
        if problem is not None:
            raise InvalidEvent(f"{where}attribute 'tracestate' {problem}")


def new_id(nbytes: int) -> str:
    """A random, non-zero id of ``nbytes`` bytes as lower-case hex."""
    while True:
        value = os.urandom(nbytes).hex()
        if value.strip("0"):
            return value


_ids: list[str] = []
_POOL = 128
os.register_at_fork(after_in_child=_ids.clear)  # a forked child draws ids of its own


def _fresh_ids() -> str:
    """48 random hex digits (a trace id and a span id), taken from a pool that one
    ``os.urandom`` call refills for 128 events: the ingress and bulk publishing make one per event."""
    try:
        return _ids.pop()
    except IndexError:
        pool = os.urandom(24 * _POOL).hex()
        _ids.extend(pool[i : i + 48] for i in range(0, len(pool), 48))
        return _ids.pop()


def new_traceparent(trace_id: str | None = None, flags: str = "01") -> str:
    """A ``traceparent`` with a fresh span id: in ``trace_id`` (a child) or in a new trace.

    Events evroute gives a trace to are marked sampled, so that the services they reach
    record their part of it.
    """
    if trace_id is None:
        ids = _fresh_ids()
        trace_id, span_id = ids[:32], ids[32:]
        if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
            return f"00-{trace_id}-{span_id}-{flags}"
        trace_id = new_id(16)
    return f"00-{trace_id}-{new_id(8)}-{flags}"


def child_of(traceparent: object) -> str:
    """A traceparent for something caused by ``traceparent``: same trace, new span id."""
    parsed = parse(traceparent)
    if parsed is None:
        return new_traceparent()
    return new_traceparent(parsed[0], parsed[2])


# --------------------------------------------------------------------------- exporting spans

_exporter: Any = None  # an evroute.otlp.Exporter while spans are exported


def endpoint(setting: str | None = None) -> str | None:
    """The OTLP endpoint in force: the standard ``OTEL_*`` variables, else ``setting``."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = env.get(name, "").strip()
        if value:
            return value
    return setting or None


def setup(setting: str | None = None, *, one_shot: bool = False) -> bool:
    """Start exporting spans when an endpoint is configured; True when spans are exported.

    ``one_shot``: a short-lived process (``evroute publish``) that waits at most about a
    second for the collector when it exits.
    """
    global _exporter
    if _exporter is not None:
        return True
    where = endpoint(setting)
    if where is None:
        return False
    try:
        from evroute import otlp
    except ImportError as exc:
        import logging

        logging.getLogger("evroute.tracing").warning(
            "tracing: an OTLP endpoint is set but OpenTelemetry is not installed (%s); "
            "install evroute[otel] to export spans (trace context is passed on regardless)",
            exc.name or exc,
        )
        return False
    _exporter = otlp.Exporter(where, from_env=where != setting, one_shot=one_shot)
    return True


def shutdown(timeout: float = 2.0) -> None:
    """Send what is buffered (waiting at most ``timeout`` seconds) and stop exporting."""
    global _exporter
    exporter, _exporter = _exporter, None
    if exporter is not None:
        exporter.shutdown(timeout)


def exporting() -> bool:
    return _exporter is not None


# --------------------------------------------------------------------------- hooks


def ensure(event: CloudEvent, broker: str = "default") -> CloudEvent:
    """The event as stored: given a ``traceparent`` when it has none (a publish span's, when
    spans are exported, else random ids)."""
    if _exporter is not None:
        return _exporter.publish(event, broker)
    attrs = event.attributes
    if TRACEPARENT in attrs:
        return event
    return type(event)({**attrs, TRACEPARENT: new_traceparent()}, event.data)


def ingress_started(headers: Mapping[str, str], broker: str) -> Any:
    """The server span of an ingress request (None unless spans are exported)."""
    return None if _exporter is None else _exporter.ingress_started(headers, broker)


def ingress_finished(span: Any, status: int) -> None:
    if span is not None and _exporter is not None:
        _exporter.ingress_finished(span, status)


def from_request(
    headers: Mapping[str, str], events: Iterable[CloudEvent], broker: str, span: Any = None
) -> list[CloudEvent]:
    """Events of an ingress request: one without a ``traceparent`` attribute takes the plain
    W3C ``traceparent``/``tracestate`` headers of the request (ignored when malformed, as W3C
    says), else a new trace. While spans are exported, such an event's trace goes through the
    request's server ``span`` instead."""
    if _exporter is not None and span is not None:
        return [_exporter.publish(event, broker, span) for event in events]
    header = headers.get(TRACEPARENT)
    out = []
    for event in events:
        if header is not None and TRACEPARENT not in event.attributes and parse(header) is not None:
            state = headers.get(TRACESTATE)
            if state is not None and tracestate_problem(state) is not None:
                state = None
            event = event.with_attributes(traceparent=header, tracestate=state)
        out.append(ensure(event, broker))
    return out


class Hop:
    """One delivery attempt's trace context: the headers (or environment) that carry it, and
    its span while spans are exported."""

    __slots__ = ("headers", "span")

    def __init__(self, headers: dict[str, str], span: Any = None) -> None:
        self.headers = headers
        self.span = span

    def environment(self) -> dict[str, str]:
        """``TRACEPARENT``/``TRACESTATE`` for a command subscriber."""
        return {name.upper(): value for name, value in self.headers.items()}


def start_attempt(
    event: CloudEvent, *, route: str, broker: str, attempt: int, dead_letter_sink: bool = False
) -> Hop:
    """Call before an attempt is sent: the context it carries (the attempt's own span when
    spans are exported, the event's trace context as it is otherwise)."""
    if _exporter is not None:
        hop = _exporter.start_attempt(
            event, route=route, broker=broker, attempt=attempt, dead_letter_sink=dead_letter_sink
        )
        if hop is not None:
            return hop
    attrs = event.attributes
    parent = attrs.get(TRACEPARENT)
    if parent is None:
        return Hop({})
    state = attrs.get(TRACESTATE)
    if state is None:
        return Hop({TRACEPARENT: str(parent)})
    return Hop({TRACEPARENT: str(parent), TRACESTATE: str(state)})


def finish_attempt(hop: Hop, outcome: Outcome) -> Outcome:
    """Call with the attempt's outcome: ends its span and puts a reply in the same trace.

    A reply whose own ``traceparent`` is already in this trace (the subscriber's tracing
    joined it) keeps it; any other reply becomes a child of the attempt.
    """
    reply = outcome.reply
    if hop.span is not None and _exporter is not None:
        reply = _exporter.finish_attempt(hop, outcome)
    elif reply is not None:
        reply = reply_in_trace(reply, hop.headers.get(TRACEPARENT), hop.headers.get(TRACESTATE))
    if reply is outcome.reply:
        return outcome
    from dataclasses import replace

    return replace(outcome, reply=reply)


def reply_in_trace(
    reply: CloudEvent, parent: str | None, state: str | None, new: str | None = None
) -> CloudEvent:
    """``reply`` placed in the trace of ``parent`` (with ``new`` as its traceparent, or a fresh child)."""
    own = parse(reply.attributes.get(TRACEPARENT))
    theirs = parse(parent)
    if own is not None and theirs is not None and own[0] == theirs[0]:
        return reply
    if parent is None:
        return ensure(reply)
    return reply.with_attributes(traceparent=new or child_of(parent), tracestate=state)


def dead_lettered(
    event: CloudEvent, *, route: str, broker: str, reason: str, attempts: int, error: str
) -> None:
    """Record that ``event`` was dead-lettered on ``route`` (a span, when spans are exported)."""
    if _exporter is not None:
        _exporter.dead_lettered(
            event, route=route, broker=broker, reason=reason, attempts=attempts, error=error
        )


__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Hop",
    "check",
    "child_of",
    "dead_lettered",
    "endpoint",
    "ensure",
    "exporting",
    "finish_attempt",
    "from_request",
    "ingress_finished",
    "ingress_started",
    "new_traceparent",
    "parse",
    "setup",
    "shutdown",
    "start_attempt",
    "tracestate_problem",
]
