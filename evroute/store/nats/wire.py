"""The CloudEvents NATS protocol binding, structured content mode, and the dedup id.

On the wire an event is its structured JSON (``application/cloudevents+json``), the same
bytes ``format: json`` delivers over HTTP, so any CloudEvents SDK client can publish to
``evroute.<broker>`` or read the stream. Binary mode (``ce-`` headers, NATS binding 1.1) is
read too, so a producer using it is not refused.

``Nats-Msg-Id`` is derived from ``(source, id)``: the server drops a second publish of the same
pair within the stream's duplicate window, which is what evroute's identity rule asks for.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

from evroute.cloudevent import STRUCTURED_CT, CloudEvent, from_dict, from_json, to_json

MSG_ID = "Nats-Msg-Id"
CONTENT_TYPE = "Content-Type"


def msg_id(event: CloudEvent) -> str:
    """A stable, header-safe id for ``(source, id)`` (both may hold any text)."""
    key = json.dumps([event.source, event.id], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()


def encode(event: CloudEvent) -> tuple[bytes, dict[str, str]]:
    return to_json(event), {MSG_ID: msg_id(event), CONTENT_TYPE: STRUCTURED_CT}


def decode(data: bytes, headers: Mapping[str, str] | None) -> CloudEvent:
    """The event a message carries; InvalidEvent when it is not one (the worker dead-letters it)."""
    headers = headers or {}
    ce = {k[3:].lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
    if "specversion" in ce and "id" in ce:
        attrs: dict[str, object] = dict(ce)
        ct = headers.get(CONTENT_TYPE) or headers.get("content-type")
        if ct:
            attrs["datacontenttype"] = ct
        if data:
            attrs["data_base64"] = base64.b64encode(data).decode("ascii")
        return from_dict(attrs, "NATS message: ")
    return from_json(data, "NATS message: ")
