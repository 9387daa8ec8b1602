"""Dapr's publish API: ``POST /v1.0/publish/<pubsubname>/<topic>`` turned into a CloudEvent.

The envelope is the one Dapr's sidecar builds (dapr/dapr ``pkg/runtime/pubsub/cloudevents.go``,
components-contrib ``pubsub/envelope.go``):

- A plain body is wrapped: ``id`` a new UUID, ``source`` ``Dapr`` (Dapr writes its app id;
  evroute has none), ``type`` ``com.dapr.event.sent``, ``specversion`` 1.0, ``time`` now,
  ``datacontenttype`` the request's Content-Type (``text/plain`` when there is none), the body
  as data, and the extensions ``topic`` and ``pubsubname`` from the URL. A JSON content type
  needs a JSON body (400 otherwise: evroute never stores data that contradicts its type).
- A body sent as ``application/cloudevents+json`` is a CloudEvent already: it keeps its own
  attributes; ``topic`` and ``pubsubname`` are set from the URL, as Dapr does. An attribute
  that CloudEvents requires and the body lacks takes the default above (Dapr forwards such an
  event as it is; evroute stores only valid CloudEvents).
- Dapr's metadata overrides, ``?metadata.cloudevent.id=…`` (also ``source``, ``type``,
  ``subject``, ``traceparent``, ``tracestate``, ``traceid``), apply to a wrapped body; ``topic``,
  ``pubsubname``, ``data`` and ``datacontenttype`` cannot be overridden, as in Dapr.
  ``metadata.rawPayload=true`` is refused (evroute stores CloudEvents only); other
  ``metadata.*`` parameters configure a Dapr component and are ignored.
- A W3C ``traceparent`` header sets ``traceparent`` and ``traceid`` (Dapr writes both).

``evroute publish --topic T`` sets the same ``type``, ``topic`` and ``pubsubname``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from evroute.cloudevent import CloudEvent, from_dict, is_json_type, now_rfc3339, validate
from evroute.errors import InvalidEvent

DAPR_TYPE = "com.dapr.event.sent"
DAPR_SOURCE = "Dapr"
DEFAULT_CONTENT_TYPE = "text/plain"
CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
OVERRIDABLE = ("id", "source", "type", "subject", "traceparent", "tracestate", "traceid")


def topic_attributes(topic: str, pubsubname: str) -> dict[str, str]:
    """The extensions Dapr puts on every event it publishes."""
    return {"topic": topic, "pubsubname": pubsubname}


def _is_cloudevent_type(content_type: str | None) -> bool:
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return base == CLOUDEVENT_CONTENT_TYPE


def _is_binary_type(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/octet-stream"


def envelope(
    body: bytes,
    *,
    content_type: str | None,
    topic: str,
    pubsubname: str,
    metadata: Mapping[str, str] | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """The CloudEvent Dapr's publish API makes of ``body``; InvalidEvent names what is wrong."""
    meta = dict(metadata or {})
    raw_payload = meta.get("rawPayload", "").strip().lower()
    if raw_payload in ("true", "1"):
        raise InvalidEvent("metadata.rawPayload=true is not supported: evroute stores CloudEvents")
    trace: dict[str, str] = {}
    if traceparent:
        trace = {"traceparent": traceparent, "traceid": traceparent}
    if _is_cloudevent_type(content_type):
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidEvent(f"the body is not a JSON CloudEvent ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("a CloudEvent body must be a JSON object")
        obj.setdefault("specversion", "1.0")
        obj.setdefault("id", str(uuid.uuid4()))
        obj.setdefault("source", DAPR_SOURCE)
        obj.setdefault("type", DAPR_TYPE)
        for key, value in trace.items():
            obj.setdefault(key, value)
        obj.update(topic_attributes(topic, pubsubname))
        return from_dict(obj)
    ct = content_type.strip() if content_type and content_type.strip() else DEFAULT_CONTENT_TYPE
    if is_json_type(ct):
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidEvent(
                f"the body is not valid JSON but Content-Type {ct} says it is ({type(exc).__name__})"
            ) from None
    elif not _is_binary_type(ct):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(
                f"the body is not UTF-8 text but Content-Type {ct} says it is text "
                "(send bytes as application/octet-stream)"
            ) from None
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": DAPR_SOURCE,
        "type": DAPR_TYPE,
        "time": now_rfc3339(),
        "datacontenttype": ct,
        **trace,
    }
    for key in OVERRIDABLE:
        override = meta.get(f"cloudevent.{key}")
        if override:
            attrs[key] = override
    if meta.get("cloudevent.traceparent"):  # Dapr: traceid follows an overridden traceparent
        attrs["traceid"] = meta["cloudevent.traceparent"]
    attrs.update(topic_attributes(topic, pubsubname))
    return CloudEvent(validate(attrs), body)


def metadata_from_query(query: Mapping[str, str]) -> dict[str, str]:
    """Dapr's ``metadata.<key>=<value>`` query parameters as ``{key: value}``."""
    return {k[len("metadata.") :]: v for k, v in query.items() if k.startswith("metadata.")}


__all__ = [
    "DAPR_SOURCE",
    "DAPR_TYPE",
    "envelope",
    "metadata_from_query",
    "topic_attributes",
]
