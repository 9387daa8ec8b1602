"""CloudEvents 1.0: the event value, its validation, the JSON (structured) format and the
HTTP protocol binding (binary, structured and batch content modes).

An event is its context attributes (``specversion``, ``id``, ``source``, ``type`` and the
optional and extension attributes, typed ``str | int | bool``) plus ``data`` as raw bytes.
Keeping data as bytes is what lets a binary-mode body travel through evroute unchanged,
byte for byte; the JSON format decides how those bytes are written (``data`` as JSON, as a
string, or ``data_base64``) only when the event is serialised.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from evroute.errors import EventTooLarge, InvalidEvent
from evroute.tracing import TRACEPARENT, TRACESTATE
from evroute.tracing import check as check_trace

AttrValue = str | int | bool

REQUIRED = ("id", "source", "type", "specversion")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
CORE = REQUIRED + OPTIONAL
STRUCTURED_CT = "application/cloudevents+json"
BATCH_CT = "application/cloudevents-batch+json"
HOPS = "evroutehops"
DELIVER_AT = "evroutedeliverat"  # RFC 3339: hold the event for every route until then

_NAME = re.compile(r"^[a-z0-9]{1,20}\Z")  # \Z, not $: "$" also matches before a final newline
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})\Z")
_MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?\Z"
)  # no control characters: the value becomes a Content-Type header on delivery
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_INT32 = (-(2**31), 2**31 - 1)


class CloudEvent:
    """One CloudEvent. Build it with :func:`make_event` or the parsers below, which validate.

    An immutable value (compared by attributes and data). A plain class rather than a frozen
    dataclass: defining a dataclass costs most of a millisecond, paid by every ``evroute
    publish`` process."""

    __slots__ = ("attributes", "data")
    attributes: Mapping[str, AttrValue]
    data: bytes | None

    def __init__(self, attributes: Mapping[str, AttrValue], data: bytes | None = None) -> None:
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "data", data)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CloudEvent is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CloudEvent is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not CloudEvent:
            return NotImplemented
        assert isinstance(other, CloudEvent)
        return self.attributes == other.attributes and self.data == other.data

    __hash__ = None  # type: ignore[assignment]  # attributes is a mapping: not hashable

    def __repr__(self) -> str:
        return f"CloudEvent(attributes={self.attributes!r}, data={self.data!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy build a new one (no __setattr__)
        return (CloudEvent, (self.attributes, self.data))

    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def type(self) -> str:
        return str(self.attributes["type"])

    @property
    def subject(self) -> str | None:
        value = self.attributes.get("subject")
        return None if value is None else str(value)

    @property
    def time(self) -> str | None:
        value = self.attributes.get("time")
        return None if value is None else str(value)

    @property
    def datacontenttype(self) -> str | None:
        value = self.attributes.get("datacontenttype")
        return None if value is None else str(value)

    @property
    def extensions(self) -> dict[str, AttrValue]:
        return {k: v for k, v in self.attributes.items() if k not in CORE}

    def with_attributes(self, **changes: AttrValue | None) -> CloudEvent:
        """A copy with attributes set (or removed where the value is None); not re-validated."""
        attrs = dict(self.attributes)
        for key, value in changes.items():
            if value is None:
                attrs.pop(key, None)
            else:
                attrs[key] = value
        return CloudEvent(attrs, self.data)

    def size(self) -> int:
        """Bytes counted against ``maxEventBytes``: attribute names and values plus data."""
        total = len(self.data or b"")
        for key, value in self.attributes.items():
            total += len(key) + len(str(value).encode("utf-8", "surrogatepass"))
        return total


# --------------------------------------------------------------------------- validation


def _check_text(name: str, value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{where}attribute '{name}' must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"{where}attribute '{name}' is not valid UTF-8") from None
    return value


def validate(attributes: Mapping[str, object], where: str = "") -> dict[str, AttrValue]:
    """Return the attributes checked and normalised; raise InvalidEvent naming the first problem.

    ``where`` prefixes messages (``"line 7: "``) for batch input.
    """
    out: dict[str, AttrValue] = {}
    for name in REQUIRED:
        if name not in attributes or attributes[name] is None:
            raise InvalidEvent(f"{where}missing required attribute '{name}'")
    for name, value in attributes.items():
        if value is None:
            continue  # the JSON format treats null as absent
        if not _NAME.match(name):
            raise InvalidEvent(
                f"{where}attribute name {name!r} is invalid (lower-case letters and digits, 1-20 characters)"
            )
        if name == "specversion":
            if value != "1.0":
                raise InvalidEvent(f'{where}specversion must be "1.0", got {value!r}')
            out[name] = value
        elif name in ("id", "source", "type", "subject"):
            out[name] = _check_text(name, value, where)
        elif name == "time":
            text = _check_text(name, value, where)
            if not _RFC3339.match(text) or _parse_time(text) is None:
                raise InvalidEvent(f"{where}attribute 'time' must be an RFC 3339 timestamp, got {text!r}")
            out[name] = text
        elif name == DELIVER_AT:
            if not isinstance(value, str) or not _RFC3339.match(value) or _parse_time(value) is None:
                raise InvalidEvent(
                    f"{where}extension '{DELIVER_AT}' must be an RFC 3339 timestamp such as "
                    f"2026-12-01T09:00:00Z, got {value!r}"
                )
            out[name] = value
        elif name == "datacontenttype":
            text = _check_text(name, value, where)
            if not _MEDIA_TYPE.match(text):
                raise InvalidEvent(
                    f"{where}attribute 'datacontenttype' must be a media type like application/json, got {text!r}"
                )
            out[name] = text
        elif name == "dataschema":
            text = _check_text(name, value, where)
            if not _SCHEME.match(text):
                raise InvalidEvent(f"{where}attribute 'dataschema' must be an absolute URI, got {text!r}")
            out[name] = text
        elif isinstance(value, bool):
            out[name] = value
        elif isinstance(value, int):
            if not _INT32[0] <= value <= _INT32[1]:
                raise InvalidEvent(f"{where}extension '{name}' is out of the 32-bit integer range")
            out[name] = value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent(f"{where}extension '{name}' is not valid UTF-8") from None
            out[name] = value
        else:
            raise InvalidEvent(
                f"{where}extension '{name}' must be a string, integer or boolean, got {type(value).__name__}"
            )
    if TRACEPARENT in out or TRACESTATE in out:
        check_trace(out, where)  # the distributed-tracing extension: W3C Trace Context values
    return out


def _parse_time(text: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_json_type(content_type: str | None) -> bool:
    """True for absent, ``application/json``, ``text/json`` and ``*/*+json`` media types."""
    if content_type is None:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base in ("application/json", "text/json") or base.endswith("+json")


def make_event(
    *,
    type: str,
    source: str = "/evroute/cli",
    id: str | None = None,
    data: bytes | None = None,
    datacontenttype: str | None = None,
    subject: str | None = None,
    time: str | None = None,
    dataschema: str | None = None,
    extensions: Mapping[str, AttrValue] | None = None,
) -> CloudEvent:
    """Build and validate an event, filling id (a UUID) and time (now) like ``evroute publish``."""
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": id if id is not None else str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": time if time is not None else now_rfc3339(),
    }
    for key, value in (
        ("datacontenttype", datacontenttype),
        ("subject", subject),
        ("dataschema", dataschema),
    ):
        if value is not None:
            attrs[key] = value
    for key, ext in (extensions or {}).items():
        if key in CORE or key in ("data", "data_base64"):
            raise InvalidEvent(f"extension name {key!r} is reserved (use the matching option instead)")
        attrs[key] = ext
    return CloudEvent(validate(attrs), data)


def check_size(event: CloudEvent, limit: int, where: str = "") -> None:
    size = event.size()
    if size > limit:
        raise EventTooLarge(f"{where}event is {size} bytes, over maxEventBytes {limit}")


# --------------------------------------------------------------------------- JSON format


def from_dict(obj: object, where: str = "") -> CloudEvent:
    """Parse one structured-mode event (a JSON object already decoded)."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"{where}a structured CloudEvent must be a JSON object")
    attrs = {k: v for k, v in obj.items() if k not in ("data", "data_base64")}
    checked = validate(attrs, where)
    if "data" in obj and "data_base64" in obj:
        raise InvalidEvent(f"{where}an event has either 'data' or 'data_base64', not both")
    data: bytes | None = None
    if obj.get("data_base64") is not None:
        raw = obj["data_base64"]
        if not isinstance(raw, str):
            raise InvalidEvent(f"{where}'data_base64' must be a base64 string")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent(f"{where}'data_base64' is not valid base64") from None
    elif "data" in obj and obj["data"] is not None:
        value = obj["data"]
        ct = checked.get("datacontenttype")
        if isinstance(value, str) and not is_json_type(ct if isinstance(ct, str) else None):
            data = value.encode("utf-8", "surrogatepass")
        else:
            data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "surrogatepass"
            )
    return CloudEvent(checked, data)


def to_dict(event: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object of ``event``; lossless for any data bytes."""
    out: dict[str, Any] = dict(event.attributes)
    data = event.data
    if data is None:
        return out
    ct = event.datacontenttype
    if is_json_type(ct):
        try:
            out["data"] = json.loads(data)
            return out
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass  # not JSON after all, or nested too deeply to parse: the bytes travel as base64
    elif _is_text_type(ct):
        try:
            out["data"] = data.decode("utf-8")
            return out
        except UnicodeDecodeError:
            pass
    out["data_base64"] = base64.b64encode(data).decode("ascii")
    return out


def _is_text_type(ct: str | None) -> bool:
    base = (ct or "").split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/") or base.endswith("+xml") or base in ("application/xml", "application/yaml")
    )


def from_json(text: str | bytes, where: str = "") -> CloudEvent:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"{where}not valid JSON ({_json_reason(exc)})") from None
    return from_dict(obj, where)


def to_json(event: CloudEvent) -> bytes:
    return json.dumps(to_dict(event), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def batch_from_json(body: bytes | str) -> list[CloudEvent]:
    """A batch (JSON array of structured events); all valid or InvalidEvent naming the index."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"batch is not valid JSON ({_json_reason(exc)})") from None
    if not isinstance(items, list):
        raise InvalidEvent("a batch must be a JSON array of structured CloudEvents")
    return [from_dict(item, f"event {i}: ") for i, item in enumerate(items)]


# json.loads recurses once per level of nesting: past Python's recursion limit it raises
# RecursionError, which every parse of outside input turns into this reason.
NESTED_TOO_DEEPLY = "nested too deeply (at most a few hundred levels of arrays and objects)"


def _json_reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return NESTED_TOO_DEEPLY
    return str(exc).split("\n", 1)[0]


# --------------------------------------------------------------------------- HTTP binding

# The HTTP binding (1.0.2, 3.1.3.2) percent-encodes header values: '!'..'~' except '"' and '%'
# pass as they are; space MUST be encoded too (HTTP stacks trim it at either end of a value).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


_PLAIN = re.compile(r"[!#$&-~]*")  # printable ASCII without space, '"' and '%': nothing to encode


def _encode_header(value: AttrValue) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if _PLAIN.fullmatch(text):  # fullmatch: `$` would also accept a trailing newline
        return text  # the common case, several times cheaper than quote()
    from urllib.parse import quote  # not imported at start-up: a plain publish never needs it

    return quote(text, safe=_SAFE)


def _decode_header(name: str, value: str) -> str:
    try:
        if "%" not in value:  # nothing percent-encoded (the common case): only check the text
            value.encode("utf-8")
            return value
        from urllib.parse import unquote_to_bytes  # not imported at start-up

        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(f"header 'ce-{name}' is not valid UTF-8 after percent-decoding") from None
    except UnicodeEncodeError:  # raw header bytes that were not UTF-8, kept by the HTTP parser as surrogates
        raise InvalidEvent(f"header 'ce-{name}' is not valid UTF-8") from None


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary content mode: ``ce-*`` headers, Content-Type = datacontenttype, body = data."""
    headers: dict[str, str] = {}
    for key, value in event.attributes.items():
        if key == "datacontenttype":
            headers["Content-Type"] = str(value)
        else:
            headers["ce-" + key] = _encode_header(value)
    return headers, event.data or b""


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": STRUCTURED_CT}, to_json(event)


def http_mode(headers: Mapping[str, str]) -> str | None:
    """'structured', 'batch', 'binary', or None when the request is not a CloudEvent."""
    ct = _header(headers, "content-type")
    base = (ct or "").split(";", 1)[0].strip().lower()
    if base == STRUCTURED_CT:
        return "structured"
    if base == BATCH_CT:
        return "batch"
    if _header(headers, "ce-specversion") is not None:
        return "binary"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Decode a request or response carrying CloudEvents in any mode (a batch gives many)."""
    mode = http_mode(headers)
    if mode == "structured":
        if any(k.lower().startswith("ce-") for k in headers):
            raise InvalidEvent("structured mode request must not also carry ce- headers")
        return [from_json(body)]
    if mode == "batch":
        return batch_from_json(body)
    if mode == "binary":
        attrs: dict[str, object] = {}
        for key, value in headers.items():
            low = key.lower()
            if low.startswith("ce-") and len(low) > 3:
                name = low[3:]
                if name in attrs:
                    raise InvalidEvent(f"header 'ce-{name}' appears more than once")
                attrs[name] = _decode_header(name, value)
        if "datacontenttype" in attrs:
            raise InvalidEvent("binary mode carries datacontenttype in Content-Type, not ce-datacontenttype")
        ct = _header(headers, "content-type")
        if ct:
            attrs["datacontenttype"] = ct
        return [CloudEvent(validate(attrs), body if body else None)]
    raise InvalidEvent(
        f"not a CloudEvent: use binary mode (ce-* headers), Content-Type {STRUCTURED_CT} or {BATCH_CT}"
    )


def dumps_many(events: Iterable[CloudEvent]) -> bytes:
    return b"[" + b",".join(to_json(e) for e in events) + b"]"


__all__ = [
    "BATCH_CT",
    "CORE",
    "DELIVER_AT",
    "HOPS",
    "STRUCTURED_CT",
    "AttrValue",
    "CloudEvent",
    "batch_from_json",
    "check_size",
    "dumps_many",
    "from_dict",
    "from_http",
    "from_json",
    "http_mode",
    "is_json_type",
    "make_event",
    "now_rfc3339",
    "to_binary",
    "to_dict",
    "to_json",
    "to_structured",
    "validate",
]
