"""CloudEvents 1.0 value, JSON format and HTTP binding (evroute.cloudevent).

The upstream conformance vectors (``shared/anchors/cloudevents-conformance/yaml``) are
encoded in binary and structured mode and decoded again; hypothesis checks the same
round trips for random attribute sets, extension types, data bytes and content types;
and the validation rules are checked one by one with their messages.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from evroute.cloudevent import (
    CORE,
    STRUCTURED_CT,
    CloudEvent,
    batch_from_json,
    check_size,
    from_dict,
    from_http,
    from_json,
    http_mode,
    is_json_type,
    make_event,
    to_binary,
    to_dict,
    to_json,
    to_structured,
    validate,
)
from evroute.errors import EventTooLarge, InvalidEvent
from evroute.eventfile import quick_event

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
CONFORMANCE = ANCHORS / "cloudevents-conformance" / "yaml"


# --------------------------------------------------------------------------- conformance vectors


def _vectors() -> list[Any]:
    if not CONFORMANCE.is_dir():
        return [pytest.param(None, id="anchors-absent")]
    out = []
    for path in sorted(CONFORMANCE.rglob("*.yaml")):
        # BaseLoader keeps every scalar a string: `specversion: 1.0` stays "1.0" and the
        # `time` values stay the RFC 3339 text instead of becoming datetimes.
        for i, doc in enumerate(yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)):
            if doc:
                out.append(pytest.param(doc, id=f"{path.relative_to(CONFORMANCE)}#{i}"))
    return out


def _vector_event(doc: dict[str, Any]) -> CloudEvent:
    attrs = dict(doc["ContextAttributes"])
    attrs.update(attrs.pop("Extensions", None) or {})
    data = doc.get("Data")
    return CloudEvent(validate(attrs), None if data is None else data.encode("utf-8"))


def _same_data(ct: str | None, a: bytes | None, b: bytes | None) -> bool:
    """Equal bytes; for JSON content types, equal JSON values (the JSON format re-serialises,
    and writes JSON ``null`` data as ``"data": null``, which reads back as no data)."""
    if a == b:
        return True
    if not is_json_type(ct):
        return False
    try:
        va = None if a is None else json.loads(a)
        vb = None if b is None else json.loads(b)
    except ValueError:
        return False
    return json.dumps(va, sort_keys=True) == json.dumps(vb, sort_keys=True)


@pytest.mark.parametrize("doc", _vectors())
def test_conformance_vector_round_trips_binary_and_structured(doc: dict[str, Any] | None) -> None:
    if doc is None:
        pytest.skip(f"conformance vectors not found at {CONFORMANCE}")
    event = _vector_event(doc)
    transport = {k: str(v) for k, v in (doc.get("TransportExtensions") or {}).items()}

    headers, body = to_binary(event)
    assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == event.id
    assert "ce-datacontenttype" not in headers
    if event.datacontenttype:
        assert headers["Content-Type"] == event.datacontenttype
    assert body == event.data
    assert http_mode({**headers, **transport}) == "binary"
    [decoded] = from_http({**headers, **transport}, body)  # transport headers are not attributes
    assert dict(decoded.attributes) == dict(event.attributes)
    assert decoded.data == event.data

    headers, body = to_structured(event)
    assert headers == {"Content-Type": STRUCTURED_CT}
    [decoded] = from_http({**headers, **transport}, body)
    assert dict(decoded.attributes) == dict(event.attributes)
    assert _same_data(event.datacontenttype, decoded.data, event.data)
    # A second pass through the JSON format changes nothing at all.
    assert to_json(from_json(to_json(decoded))) == to_json(decoded)

    mode = doc.get("Mode")
    if mode is not None:
        encoded = to_binary(event) if mode == "binary" else to_structured(event)
        assert http_mode(encoded[0]) == mode


def test_conformance_vectors_decode_with_the_sdk() -> None:
    """What evroute sends in binary mode is read by the CloudEvents Python SDK as sent."""
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance vectors not found at {CONFORMANCE}")
    sdk_http = pytest.importorskip("cloudevents.v1.http")
    for param in _vectors():
        event = _vector_event(param.values[0])
        headers, body = to_binary(event)
        sdk = sdk_http.from_http(headers, body)
        got = sdk.get_attributes()
        for key, value in event.attributes.items():
            # This SDK predates percent-encoding in the binding (1.0.2): it hands values over as sent.
            assert unquote(got[key]) == value, (key, param.id)
        data = sdk.get_data()
        if isinstance(data, bytes):
            assert data == event.data
        else:  # the SDK hands JSON data over parsed
            assert is_json_type(event.datacontenttype)
            assert data == json.loads(event.data or b"null")


def test_conformance_text_data_keeps_its_exact_bytes_in_structured_mode() -> None:
    """Text content types travel as a JSON string: the trailing newline and the emoji survive."""
    event = CloudEvent(
        validate(
            {
                "specversion": "1.0",
                "id": "conformance-0002",
                "source": "//github.com/cloudevents/cloudeventsconformance/yaml/v1.yaml",
                "type": "io.cloudevents.minimum",
                "datacontenttype": "text/plain; charset=utf-8",
            }
        ),
        "Hello, 🌎!\n".encode(),
    )
    doc = json.loads(to_json(event))
    assert doc["data"] == "Hello, 🌎!\n"
    assert from_json(to_json(event)) == event


# --------------------------------------------------------------------------- properties

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_ext_name = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(lambda n: n not in CORE and n != "data")
_ext_value = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.integers(-(2**31), 2**31 - 1),
    st.booleans(),
)
_time = st.datetimes(timezones=st.sampled_from([__import__("datetime").UTC])).map(
    lambda d: d.isoformat(timespec="microseconds").replace("+00:00", "Z")
)
_content_type = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/json",
        "application/vnd.shop+json",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/xml",
        "application/octet-stream",
        "image/png",
    ]
)
_json_bytes = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8"))


@st.composite
def events(draw: st.DrawFn) -> CloudEvent:
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": draw(_text),
        "source": draw(_text),
        "type": draw(_text),
    }
    if draw(st.booleans()):
        attrs["subject"] = draw(_text)
    if draw(st.booleans()):
        attrs["time"] = draw(_time)
    if draw(st.booleans()):
        attrs["dataschema"] = draw(st.sampled_from(["https://example.com/schema.json", "urn:shop:order:v1"]))
    ct = draw(_content_type)
    if ct is not None:
        attrs["datacontenttype"] = ct
    attrs.update(draw(st.dictionaries(_ext_name, _ext_value, max_size=5)))
    data = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=200), _json_bytes))
    return CloudEvent(validate(attrs), data)


def _as_header_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@given(events())
@settings(max_examples=300, deadline=None)
def test_json_format_round_trip_keeps_every_attribute_and_type(event: CloudEvent) -> None:
    decoded = from_json(to_json(event))
    assert dict(decoded.attributes) == dict(event.attributes)
    assert {k: type(v) for k, v in decoded.attributes.items()} == {
        k: type(v) for k, v in event.attributes.items()
    }
    assert _same_data(event.datacontenttype, decoded.data, event.data)
    # Serialising the decoded event again is a fixed point.
    assert to_json(from_json(to_json(decoded))) == to_json(decoded)


@given(events())
@settings(max_examples=300, deadline=None)
def test_binary_mode_round_trip_keeps_attributes_as_text_and_data_bytes(event: CloudEvent) -> None:
    headers, body = to_binary(event)
    for key, value in headers.items():
        assert value.isascii() and "\n" not in value, key  # percent-encoded where needed
    [decoded] = from_http(headers, body)
    # Binary mode carries every attribute as a header string (the binding has no types).
    assert dict(decoded.attributes) == {k: _as_header_text(v) for k, v in event.attributes.items()}
    assert decoded.data == (event.data or None)


@given(events())
@settings(max_examples=200, deadline=None)
def test_structured_mode_and_batch_round_trip(event: CloudEvent) -> None:
    headers, body = to_structured(event)
    [decoded] = from_http(headers, body)
    assert dict(decoded.attributes) == dict(event.attributes)
    assert _same_data(event.datacontenttype, decoded.data, event.data)
    [again] = batch_from_json(b"[" + to_json(event) + b"]")
    assert again == decoded


@given(events())
@settings(max_examples=300, deadline=None)
def test_quick_path_of_publish_gives_what_from_dict_gives(event: CloudEvent) -> None:
    obj = json.loads(to_json(event))
    quick = quick_event(obj)
    assert quick is None or quick == from_dict(obj)
    # Without extensions and with plain ASCII text the quick path is the one taken.
    plain = {k: v for k, v in obj.items() if k in CORE or k == "data"}
    if all(isinstance(v, str) and v.isascii() for k, v in plain.items() if k != "data"):
        assert quick_event(plain) == from_dict(plain)


@given(st.binary(max_size=300), _content_type)
@settings(max_examples=300, deadline=None)
def test_any_data_bytes_survive_the_json_format(data: bytes, ct: str | None) -> None:
    event = make_event(type="t", source="/s", id="1", data=data, datacontenttype=ct)
    decoded = from_json(to_json(event))
    assert _same_data(ct, decoded.data, data)
    if not is_json_type(ct):
        assert decoded.data == data  # text or base64: byte for byte


# --------------------------------------------------------------------------- validation

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_missing_required_attribute(name: str) -> None:
    attrs = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(InvalidEvent) as err:
        validate(attrs, "line 7: ")
    assert err.value.message == f"line 7: missing required attribute '{name}'"
    assert err.value.exit_code == 2


@pytest.mark.parametrize(("value", "shown"), [(1.0, "1.0"), ("0.3", "'0.3'"), ("1", "'1'"), (1, "1")])
def test_wrong_specversion(value: object, shown: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        validate({**BASE, "specversion": value})
    assert err.value.message == f'specversion must be "1.0", got {shown}'


@pytest.mark.parametrize("name", ["Tenant", "my-ext", "my_ext", "a" * 21, "ümlaut", ""])
def test_attribute_names_outside_the_rules(name: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        validate({**BASE, name: "x"})
    assert err.value.message == (
        f"attribute name {name!r} is invalid (lower-case letters and digits, 1-20 characters)"
    )


def test_twenty_character_extension_name_is_fine() -> None:
    assert validate({**BASE, "a" * 20: "x"})["a" * 20] == "x"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"id": ""}, "attribute 'id' must be a non-empty string"),
        ({"source": 5}, "attribute 'source' must be a non-empty string"),
        ({"subject": ""}, "attribute 'subject' must be a non-empty string"),
        ({"time": "yesterday"}, "attribute 'time' must be an RFC 3339 timestamp, got 'yesterday'"),
        (
            {"time": "2026-02-30T10:00:00Z"},
            "attribute 'time' must be an RFC 3339 timestamp, got '2026-02-30T10:00:00Z'",
        ),
        (
            {"time": "2026-01-02 10:00:00"},
            "attribute 'time' must be an RFC 3339 timestamp, got '2026-01-02 10:00:00'",
        ),
        (
            {"datacontenttype": "json"},
            "attribute 'datacontenttype' must be a media type like application/json, got 'json'",
        ),
        (
            {"dataschema": "/schema.json"},
            "attribute 'dataschema' must be an absolute URI, got '/schema.json'",
        ),
        ({"n": 2**31}, "extension 'n' is out of the 32-bit integer range"),
        ({"n": 1.5}, "extension 'n' must be a string, integer or boolean, got float"),
        ({"n": [1]}, "extension 'n' must be a string, integer or boolean, got list"),
        ({"n": {"a": 1}}, "extension 'n' must be a string, integer or boolean, got dict"),
        ({"type": "t\ud800"}, "attribute 'type' is not valid UTF-8"),
        ({"n": "x\udfff"}, "extension 'n' is not valid UTF-8"),
    ],
)
def test_invalid_attribute_values(attrs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        validate({**BASE, **attrs})
    assert err.value.message == message


def test_null_attributes_are_absent_and_types_are_kept() -> None:
    out = validate({**BASE, "subject": None, "n": 5, "flag": True, "s": ""})
    assert "subject" not in out
    assert out["n"] == 5 and out["flag"] is True and out["s"] == ""


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "a structured CloudEvent must be a JSON object"),
        ({**BASE, "data": 1, "data_base64": "AA=="}, "an event has either 'data' or 'data_base64', not both"),
        ({**BASE, "data_base64": "!!"}, "'data_base64' is not valid base64"),
        ({**BASE, "data_base64": 5}, "'data_base64' must be a base64 string"),
    ],
)
def test_structured_mode_problems(obj: object, message: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        from_dict(obj, "event 3: ")
    assert err.value.message == "event 3: " + message


def test_not_json_and_not_a_batch() -> None:
    with pytest.raises(InvalidEvent, match=r"^not valid JSON \(Expecting"):
        from_json(b"{oops")
    with pytest.raises(InvalidEvent, match=r"^a batch must be a JSON array"):
        batch_from_json(b"{}")
    with pytest.raises(InvalidEvent) as err:
        batch_from_json(json.dumps([BASE, {**BASE, "type": None}]))
    assert err.value.message == "event 1: missing required attribute 'type'"


def test_structured_data_forms() -> None:
    json_event = from_dict({**BASE, "datacontenttype": "application/json", "data": {"a": [1, 2]}})
    assert json_event.data == b'{"a":[1,2]}'
    text_event = from_dict({**BASE, "datacontenttype": "text/plain", "data": "héllo"})
    assert text_event.data == "héllo".encode()
    raw = from_dict({**BASE, "data_base64": base64.b64encode(b"\x00\xff").decode()})
    assert raw.data == b"\x00\xff"
    assert to_dict(raw)["data_base64"] == "AP8="
    assert to_dict(from_dict({**BASE, "datacontenttype": "image/png", "data_base64": "AP8="})) == {
        **BASE,
        "datacontenttype": "image/png",
        "data_base64": "AP8=",
    }


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-datacontenttype": "a/b",
            },
            "binary mode carries datacontenttype in Content-Type, not ce-datacontenttype",
        ),
        (
            {"Content-Type": STRUCTURED_CT, "ce-id": "1"},
            "structured mode request must not also carry ce- headers",
        ),
        ({"Content-Type": "application/json"}, "not a CloudEvent: use binary mode (ce-* headers)"),
        (
            {"ce-specversion": "1.0", "ce-id": "%FF", "ce-source": "/s", "ce-type": "t"},
            "header 'ce-id' is not valid UTF-8 after percent-decoding",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "CE-ID": "2", "ce-source": "/s", "ce-type": "t"},
            "header 'ce-id' appears more than once",
        ),
        (
            {"ce-specversion": "0.3", "ce-id": "1", "ce-source": "/s", "ce-type": "t"},
            'specversion must be "1.0"',
        ),
    ],
)
def test_http_binding_problems(headers: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        from_http(headers, b"")
    assert err.value.message.startswith(message)


def test_binary_mode_percent_encodes_and_decodes_unicode() -> None:
    event = make_event(type="t", source="/s", id="1", subject='ein "Ü" 100%', extensions={"n": 7, "b": False})
    headers, _ = to_binary(event)
    assert headers["ce-subject"] == "ein%20%22%C3%9C%22%20100%25"
    assert headers["ce-n"] == "7" and headers["ce-b"] == "false"
    [decoded] = from_http({k.upper(): v for k, v in headers.items()}, b"")
    assert decoded.subject == 'ein "Ü" 100%'


def test_make_event_fills_id_and_time_and_refuses_reserved_extensions() -> None:
    event = make_event(type="t")
    assert event.source == "/evroute/cli" and len(event.id) == 36 and event.time is not None
    with pytest.raises(InvalidEvent, match="reserved"):
        make_event(type="t", extensions={"type": "x"})
    with pytest.raises(InvalidEvent, match="reserved"):
        make_event(type="t", extensions={"data": "x"})


def test_size_counts_attributes_and_data() -> None:
    event = make_event(type="t", source="/s", id="1", time="2026-01-02T00:00:00Z", data=b"x" * 100)
    size = event.size()
    assert size == 100 + sum(len(k) + len(str(v)) for k, v in event.attributes.items())
    check_size(event, size)
    with pytest.raises(EventTooLarge) as err:
        check_size(event, size - 1, "line 2: ")
    assert err.value.message == f"line 2: event is {size} bytes, over maxEventBytes {size - 1}"
