"""The common binary-mode request, decoded in one pass over its headers.

Nearly every request the ingress takes is one event in binary mode whose ``ce-*`` headers are
plain ASCII: ``specversion``, ``id``, ``source``, ``type``, perhaps ``subject``, ``time`` and a
few extensions, with a media type in ``Content-Type``. The general parser
(:func:`evroute.cloudevent.from_http` behind :func:`evroute.worker.ingress.parse`) walks the
headers twice, percent-decodes and re-validates every attribute by name; here one loop does
what those steps do for this shape, with the same checks, and anything else — a
percent-encoded or non-ASCII value, a repeated header, a trace-context, schema or delivery-time
attribute, a value the checks would refuse — returns None, so that the general parser decides
(and words the error). What it returns is exactly what the general parser gives for the same
request (tests/test_fastparse.py checks that on generated requests).
"""

from __future__ import annotations

from collections.abc import Mapping

from evroute.cloudevent import _MEDIA_TYPE, _RFC3339, CloudEvent, _parse_time

# Attributes with more to check than "a non-empty string": the general parser handles them.
_SPECIAL = frozenset(
    (
        "datacontenttype",
        "dataschema",
        "evroutedeliverat",
        "traceparent",
        "tracestate",
        "data",
        "data_base64",
    )
)


def binary_event(headers: Mapping[str, str], body: bytes) -> CloudEvent | None:
    """The event of a binary-mode request of the common shape, or None (use the general parser)."""
    attrs: dict[str, str] = {}
    content_type: str | None = None
    for key, value in headers.items():
        low = key.lower()
        if low[:3] == "ce-":
            name = low[3:]
            if (
                not value
                or not value.isascii()
                or "%" in value
                or name in attrs
                or name in _SPECIAL
                or not (name.isascii() and name.isalnum() and len(name) <= 20)
            ):
                return None
            attrs[name] = value
        elif low == "content-type":
            if content_type is not None:
                return None
            content_type = value
    if attrs.get("specversion") != "1.0" or "id" not in attrs or "source" not in attrs or "type" not in attrs:
        return None
    time = attrs.get("time")
    if time is not None and (_RFC3339.match(time) is None or _parse_time(time) is None):
        return None
    if content_type:
        if not content_type.isascii() or _MEDIA_TYPE.match(content_type) is None:
            return None
        attrs["datacontenttype"] = content_type
    return CloudEvent(attrs, body if body else None)


__all__ = ["binary_event"]
