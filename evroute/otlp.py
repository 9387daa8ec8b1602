"""Spans over OTLP/HTTP (the ``evroute[otel]`` extra): loaded by :func:`evroute.tracing.setup`
only when an endpoint is configured; nothing else imports this module.

Spans (one trace per event; see README, "Tracing"):

- ``publish <broker>`` (producer): an event stored by ``evroute publish``, the ingress or a
  library call. When the event came without a ``traceparent``, this span's context becomes it.
- ``ingress <broker>`` (server): one ``POST`` to the ingress; the publish spans of the events
  it carried without a trace of their own are its children.
- ``deliver <route>`` (client): one delivery attempt, a child of the event's trace context.
  The W3C ``traceparent`` header sent (or ``TRACEPARENT`` of a command) names this span, so
  the subscriber's own spans hang below it.
- ``reply <broker>`` (producer): a reply stored, a child of the attempt that brought it.
- ``dead-letter <route>`` (internal): the event given up on that route; the attempts to its
  ``deadLetterSink`` are ``dead-letter-sink <route>`` client spans.

Spans are batched (``BatchSpanProcessor``, its standard ``OTEL_BSP_*`` variables) and sent
from the processor's own thread: a delivery only appends to a bounded queue. When the collector
cannot be reached, one warning is logged and for a few seconds at a time nothing is recorded
(a delivery then carries the event's own context, as with tracing off); one line says when it
answers again, and the SDK's own retry messages are kept out of the log.

The spans are recorded without the SDK's ``Tracer``: its ``start_span`` (sampler call, context
objects, attribute cleaning) costs more per delivery than the whole budget tracing has on the
delivery path. A span here is its ids, name, kind, times and a plain attribute dict, handed to
the processor as the SDK's own ``ReadableSpan`` when it ends, the value exporters consume.
Sampling is parent-based: a trace whose producer did not sample it (flags ``00``) is passed on
but not recorded; every new trace is recorded.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from evroute import __version__
from evroute.cloudevent import CloudEvent
from evroute.delivery.outcome import Kind, Outcome
from evroute.tracing import (
    TRACEPARENT,
    TRACESTATE,
    Hop,
    new_traceparent,
    parse,
    reply_in_trace,
    tracestate_problem,
)

logger = logging.getLogger("evroute.tracing")

RETRY_SECONDS = 5.0  # while the collector is down, batches are dropped, and it is tried again after this
# A short-lived process waits this long for the collector: shorter than the SDK's first retry
# backoff (0.8 s or more), so a refused connection costs milliseconds, not a retry.
ONE_SHOT_TIMEOUT = 0.5
PATIENCE = 0.5  # at shutdown, seconds the SDK may spend on retries before they are cut short
# The SDK logs every failed export, every retry and every span dropped from a full queue:
# with the collector down that is a line per batch or per span. evroute says it once instead.
_QUIET = ("opentelemetry.sdk._shared_internal", "opentelemetry.sdk.trace.export")
# The exporter's own messages are not shown either, but they are read: its first "retrying"
# says the collector is unreachable long before its retries (up to OTEL_EXPORTER_OTLP_TIMEOUT)
# give up, and from then on spans are not even recorded.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


def traces_url(endpoint: str) -> str:
    """``settings.tracing.endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class _Quiet(SpanExporter, logging.Filter):
    """The OTLP exporter, logging one line when the collector goes away and one when it is back.

    While the collector is known to be down, batches are dropped without being encoded, and
    :meth:`dropping` tells the span recorder not to record; it is tried again every
    ``RETRY_SECONDS``.
    """

    def __init__(self, inner: OTLPSpanExporter, where: str) -> None:
        logging.Filter.__init__(self)
        self.inner = inner
        self.where = where
        self.down = False
        self.retry_at = 0.0
        self.dropped = 0

    def dropping(self) -> bool:
        return self.down and time.monotonic() < self.retry_at

    def trouble(self) -> None:
        if not self.down:
            logger.warning(
                "tracing: cannot export spans to %s; spans are dropped until it answers (deliveries go on)",
                self.where,
            )
            self.down = True
        self.retry_at = time.monotonic() + RETRY_SECONDS

    def filter(self, record: logging.LogRecord) -> bool:
        """Every message of the SDK's exporter: swallowed, and a warning or worse means trouble."""
        if record.levelno >= logging.WARNING:
            self.trouble()
        return False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.dropping():
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK catches its own faults; this is for the ones it does not
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            if self.down:
                logger.info(
                    "tracing: exporting spans to %s again (%d dropped meanwhile)", self.where, self.dropped
                )
                self.down = False
                self.dropped = 0
            return result
        self.trouble()
        self.dropped += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _resource() -> Resource:
    attrs: dict[str, Any] = {"service.version": __version__}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attrs["service.name"] = "evroute"
    return Resource.create(attrs)


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


def _remote(traceparent: object, tracestate: object = None) -> SpanContext | None:
    """The remote parent named by ``traceparent`` (None, a new trace, when there is none)."""
    parsed = parse(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    state = TraceState.from_header([str(tracestate)]) if tracestate else None
    sampled = _SAMPLED if int(flags, 16) & 1 else _NOT_SAMPLED
    return SpanContext(int(trace_id, 16), int(span_id, 16), True, sampled, state)


def _new_id(bits: int) -> int:
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class Span:
    """A span in progress."""

    __slots__ = ("attributes", "context", "kind", "name", "parent", "start")

    def __init__(
        self, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any]
    ) -> None:
        if parent is None:
            self.context = SpanContext(_new_id(128), _new_id(64), False, _SAMPLED)
        else:
            self.context = SpanContext(
                parent.trace_id, _new_id(64), False, parent.trace_flags, parent.trace_state
            )
        self.name = name
        self.kind = kind
        self.parent = parent
        self.attributes = attributes
        self.start = time.time_ns()

    def traceparent(self) -> str:
        ctx = self.context
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 1:02x}"


def _event_attributes(event: CloudEvent) -> dict[str, Any]:
    return {
        "messaging.system": "evroute",
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
        "cloudevents.event_type": event.type,
    }


class Exporter:
    def __init__(self, where: str, *, from_env: bool, one_shot: bool = False) -> None:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        url = None if from_env else traces_url(where)
        inner = OTLPSpanExporter(endpoint=url, timeout=ONE_SHOT_TIMEOUT if one_shot else None)
        self.quiet = _Quiet(inner, url or where)
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
            logging.getLogger(name).addFilter(self.quiet)
        self.processor = BatchSpanProcessor(self.quiet)
        self.resource = _resource()
        self.scope = InstrumentationScope("evroute", __version__)
        if one_shot:
            atexit.register(self.shutdown, ONE_SHOT_TIMEOUT + 0.5)

    def shutdown(self, timeout: float) -> None:
        """Flush and stop, waiting at most about ``timeout`` seconds for the collector.

        A collector known to be down is not waited for; one that has not taken the last spans
        within ``PATIENCE`` gets no more retries (the SDK would back off for up to
        ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s): only the request in flight is waited for.
        """
        atexit.unregister(self.shutdown)
        for name in _EXPORTER_LOGGERS:  # what the SDK says while shutting down is not news
            logging.getLogger(name).removeFilter(self.quiet)
            logging.getLogger(name).setLevel(logging.CRITICAL)
        done = threading.Thread(target=self.processor.shutdown, name="otlp-shutdown", daemon=True)
        done.start()
        done.join(0 if self.quiet.down else min(PATIENCE, timeout))
        if done.is_alive():
            self.quiet.inner.shutdown()  # ends the SDK's retry wait
            done.join(timeout)
        if done.is_alive():
            logger.warning(
                "tracing: spans not sent to %s within %.1fs were dropped", self.quiet.where, timeout
            )

    def end(self, span: Span, error: str | None = None) -> None:
        if not span.context.trace_flags.sampled or self.quiet.dropping():
            return
        self.processor.on_end(
            ReadableSpan(
                span.name,
                span.context,
                span.parent,
                self.resource,
                span.attributes,
                kind=span.kind,
                status=_UNSET if error is None else Status(StatusCode.ERROR, error),
                start_time=span.start,
                end_time=time.time_ns(),
                instrumentation_scope=self.scope,
            )
        )

    # ------------------------------------------------------------------ spans

    def publish(self, event: CloudEvent, broker: str, parent: Span | None = None) -> CloudEvent:
        attrs = event.attributes
        given = attrs.get(TRACEPARENT)
        if self.quiet.dropping():  # nothing is recorded while the collector is down
            return event if given is not None else event.with_attributes(traceparent=new_traceparent())
        if given is not None:
            context = _remote(given, attrs.get(TRACESTATE))
        else:
            context = None if parent is None else parent.context
        span = Span(
            f"publish {broker}",
            SpanKind.PRODUCER,
            context,
            {
                **_event_attributes(event),
                "messaging.operation.type": "send",
                "messaging.destination.name": broker,
            },
        )
        self.end(span)
        if given is not None:
            return event
        changes: dict[str, Any] = {TRACEPARENT: span.traceparent()}
        state = span.context.trace_state
        if state:
            changes[TRACESTATE] = state.to_header()
        return event.with_attributes(**changes)

    def ingress_started(self, headers: Mapping[str, str], broker: str) -> Span | None:
        if self.quiet.dropping():
            return None
        state = headers.get(TRACESTATE)
        if state is not None and tracestate_problem(state) is not None:
            state = None
        return Span(
            f"ingress {broker}",
            SpanKind.SERVER,
            _remote(headers.get(TRACEPARENT), state),
            {"http.request.method": "POST", "messaging.destination.name": broker},
        )

    def ingress_finished(self, span: Span, status: int) -> None:
        span.attributes["http.response.status_code"] = status
        self.end(span, f"HTTP {status}" if status >= 500 else None)

    def start_attempt(
        self, event: CloudEvent, *, route: str, broker: str, attempt: int, dead_letter_sink: bool
    ) -> Hop | None:
        if self.quiet.dropping():  # no span to name: the event's own context, as with tracing off
            return None
        attrs = event.attributes
        state = attrs.get(TRACESTATE)
        span = Span(
            f"{'dead-letter-sink' if dead_letter_sink else 'deliver'} {route}",
            SpanKind.CLIENT,
            _remote(attrs.get(TRACEPARENT), state),
            {
                **_event_attributes(event),
                "messaging.operation.type": "process",
                "messaging.destination.name": broker,
                "evroute.route": route,
                "evroute.attempt": attempt,
            },
        )
        headers = {TRACEPARENT: span.traceparent()}
        if state is not None:
            headers[TRACESTATE] = str(state)
        return Hop(headers, span)

    def finish_attempt(self, hop: Hop, outcome: Outcome) -> CloudEvent | None:
        span: Span = hop.span
        span.attributes["evroute.outcome"] = outcome.kind.value
        if outcome.status is not None:
            span.attributes["evroute.status"] = outcome.status
        reply = outcome.reply
        if reply is not None:
            broker = span.attributes["messaging.destination.name"]
            replied = Span(
                f"reply {broker}",
                SpanKind.PRODUCER,
                span.context,
                {
                    **_event_attributes(reply),
                    "messaging.operation.type": "send",
                    "messaging.destination.name": broker,
                },
            )
            self.end(replied)
            reply = reply_in_trace(
                reply, hop.headers[TRACEPARENT], hop.headers.get(TRACESTATE), replied.traceparent()
            )
        self.end(span, None if outcome.kind is Kind.SUCCESS else outcome.error or outcome.kind.value)
        return reply

    def dead_lettered(
        self, event: CloudEvent, *, route: str, broker: str, reason: str, attempts: int, error: str
    ) -> None:
        attrs = event.attributes
        span = Span(
            f"dead-letter {route}",
            SpanKind.INTERNAL,
            _remote(attrs.get(TRACEPARENT), attrs.get(TRACESTATE)),
            {
                **_event_attributes(event),
                "messaging.destination.name": broker,
                "evroute.route": route,
                "evroute.reason": reason,
                "evroute.attempts": attempts,
            },
        )
        self.end(span, error or reason)


__all__ = ["Exporter", "Span", "traces_url"]
