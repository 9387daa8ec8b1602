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
cannot be reached, one warning is logged, batches are dropped for a few seconds at a time, and
one line says when it answers again; the SDK's own retry messages are kept out of the log.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from evroute import __version__
from evroute.cloudevent import CloudEvent
from evroute.delivery.outcome import Kind, Outcome
from evroute.tracing import TRACEPARENT, TRACESTATE, Hop, parse, reply_in_trace

logger = logging.getLogger("evroute.tracing")

RETRY_SECONDS = 5.0  # while the collector is down, batches are dropped, and it is tried again after this
# A short-lived process waits this long for the collector: shorter than the SDK's first retry
# backoff (0.8 s or more), so a refused connection costs milliseconds, not a retry.
ONE_SHOT_TIMEOUT = 0.5
PATIENCE = 0.5  # at shutdown, seconds the SDK may spend on retries before they are cut short
# The SDK logs every failed export, every retry and every span dropped from a full queue:
# with the collector down that is a line per batch or per span. evroute says it once instead.
_QUIET = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)


def traces_url(endpoint: str) -> str:
    """``settings.tracing.endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class _Quiet(SpanExporter):
    """The OTLP exporter, logging one line when the collector goes away and one when it is back."""

    def __init__(self, inner: OTLPSpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self.down = False
        self.retry_at = 0.0
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        now = time.monotonic()
        if self.down and now < self.retry_at:
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
        if not self.down:
            logger.warning(
                "tracing: cannot export spans to %s; spans are dropped until it answers (deliveries go on)",
                self.where,
            )
            self.down = True
        self.dropped += len(spans)
        self.retry_at = time.monotonic() + RETRY_SECONDS
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


def _context(traceparent: object, tracestate: object = None) -> Context:
    """The remote parent named by ``traceparent`` (an empty context, a new trace, when there is none)."""
    parsed = parse(traceparent)
    if parsed is None:
        return Context()
    trace_id, span_id, flags = parsed
    state = TraceState.from_header([str(tracestate)]) if tracestate else None
    parent = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16) & 1), state)
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def _traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
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
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(BatchSpanProcessor(self.quiet))
        self.tracer = self.provider.get_tracer("evroute", __version__)
        if one_shot:
            atexit.register(self.shutdown, ONE_SHOT_TIMEOUT + 0.5)

    def shutdown(self, timeout: float) -> None:
        """Flush and stop, waiting at most about ``timeout`` seconds for the collector.

        A collector known to be down is not waited for; one that has not taken the last spans
        within ``PATIENCE`` gets no more retries (the SDK would back off for up to
        ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s): only the request in flight is waited for.
        """
        atexit.unregister(self.shutdown)
        done = threading.Thread(target=self.provider.shutdown, name="otlp-shutdown", daemon=True)
        done.start()
        done.join(0 if self.quiet.down else min(PATIENCE, timeout))
        if done.is_alive():
            self.quiet.inner.shutdown()  # ends the SDK's retry wait
            done.join(timeout)
        if done.is_alive():
            logger.warning(
                "tracing: spans not sent to %s within %.1fs were dropped", self.quiet.where, timeout
            )

    # ------------------------------------------------------------------ spans

    def publish(self, event: CloudEvent, broker: str, parent: Any = None) -> CloudEvent:
        attrs = event.attributes
        given = attrs.get(TRACEPARENT)
        if given is not None:
            ctx = _context(given, attrs.get(TRACESTATE))
        elif parent is not None:
            ctx = trace.set_span_in_context(parent, Context())
        else:
            ctx = Context()
        span = self.tracer.start_span(
            f"publish {broker}",
            context=ctx,
            kind=SpanKind.PRODUCER,
            attributes={
                **_event_attributes(event),
                "messaging.operation.type": "send",
                "messaging.destination.name": broker,
            },
        )
        span.end()
        if given is not None:
            return event
        return event.with_attributes(traceparent=_traceparent(span))

    def ingress_started(self, headers: Mapping[str, str], broker: str) -> Any:
        ctx = _context(headers.get(TRACEPARENT), headers.get(TRACESTATE))
        return self.tracer.start_span(
            f"ingress {broker}",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "messaging.destination.name": broker},
        )

    def ingress_finished(self, span: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def start_attempt(
        self, event: CloudEvent, *, route: str, broker: str, attempt: int, dead_letter_sink: bool
    ) -> Hop:
        attrs = event.attributes
        state = attrs.get(TRACESTATE)
        span = self.tracer.start_span(
            f"{'dead-letter-sink' if dead_letter_sink else 'deliver'} {route}",
            context=_context(attrs.get(TRACEPARENT), state),
            kind=SpanKind.CLIENT,
            attributes={
                **_event_attributes(event),
                "messaging.operation.type": "process",
                "messaging.destination.name": broker,
                "evroute.route": route,
                "evroute.attempt": attempt,
            },
        )
        headers = {TRACEPARENT: _traceparent(span)}
        if state is not None:
            headers[TRACESTATE] = str(state)
        return Hop(headers, span)

    def finish_attempt(self, hop: Hop, outcome: Outcome) -> CloudEvent | None:
        span = hop.span
        span.set_attribute("evroute.outcome", outcome.kind.value)
        if outcome.status is not None:
            span.set_attribute("evroute.status", outcome.status)
        if outcome.kind is not Kind.SUCCESS:
            span.set_status(Status(StatusCode.ERROR, outcome.error))
        reply = outcome.reply
        if reply is not None:
            rspan = self.tracer.start_span(
                f"reply {span.attributes.get('messaging.destination.name', '')}".rstrip(),
                context=trace.set_span_in_context(span, Context()),
                kind=SpanKind.PRODUCER,
                attributes={**_event_attributes(reply), "messaging.operation.type": "send"},
            )
            rspan.end()
            reply = reply_in_trace(
                reply, hop.headers[TRACEPARENT], hop.headers.get(TRACESTATE), _traceparent(rspan)
            )
        span.end()
        return reply

    def dead_lettered(
        self, event: CloudEvent, *, route: str, broker: str, reason: str, attempts: int, error: str
    ) -> None:
        attrs = event.attributes
        span = self.tracer.start_span(
            f"dead-letter {route}",
            context=_context(attrs.get(TRACEPARENT), attrs.get(TRACESTATE)),
            kind=SpanKind.INTERNAL,
            attributes={
                **_event_attributes(event),
                "messaging.destination.name": broker,
                "evroute.route": route,
                "evroute.reason": reason,
                "evroute.attempts": attempts,
            },
        )
        span.set_status(Status(StatusCode.ERROR, error or reason))
        span.end()


__all__ = ["Exporter", "traces_url"]
