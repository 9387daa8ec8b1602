"""The ingress's binary-mode fast path gives exactly what the general parser gives, or steps
aside (None) and lets the general parser decide."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from evroute.cloudevent import http_mode, make_event, to_binary
from evroute.errors import InvalidInput
from evroute.tracing import new_traceparent
from evroute.worker.fastparse import binary_event
from evroute.worker.ingress import parse

NAMES = [
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-subject",
    "ce-time",
    "CE-Tenant",
    "ce-count",
    "ce-",
    "ce-a_b",
    "ce-datacontenttype",
    "ce-dataschema",
    "ce-traceparent",
    "ce-tracestate",
    "ce-evroutedeliverat",
    "ce-abcdefghijklmnopqrstu",  # 21 characters: too long
    "ce-ümlaut",
    "Content-Type",
    "content-type",
    "X-Other",
]
VALUES = [
    "1.0",
    "0.3",
    "",
    " ",
    "x",
    "/orders",
    "order.placed",
    "2026-11-30T07:00:00Z",
    "2026-11-30T07:00:00.123+01:00",
    "2026-13-30T07:00:00Z",
    "yesterday",
    "application/json",
    "text/plain; charset=utf-8",
    "not a media type",
    "a%20b",
    "%zz",
    "caf\u00e9",
    "\udcff",
    "tab\tinside",
    "https://example.com/s",
    new_traceparent(),
]
REQUIRED = [("ce-specversion", "1.0"), ("ce-id", "e-1"), ("ce-source", "/s"), ("ce-type", "t")]


def general(headers: CIMultiDictProxy[str], body: bytes) -> object:
    try:
        return parse(headers, body)
    except InvalidInput as exc:
        return ("invalid", exc.message)


def check(pairs: list[tuple[str, str]], body: bytes) -> bool:
    """True when the fast path took the request; either way it agrees with the general parser."""
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    if http_mode(headers) != "binary":
        return False
    fast = binary_event(headers, body)
    if fast is None:
        return False
    slow = general(headers, body)
    assert isinstance(slow, list) and len(slow) == 1, (pairs, slow)
    assert list(fast.attributes.items()) == list(slow[0].attributes.items())  # order kept too
    assert fast.data == slow[0].data
    return True


@settings(max_examples=3000, deadline=None)
@given(
    extra=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=6),
    keep=st.lists(st.booleans(), min_size=4, max_size=4),
    body=st.sampled_from([b"", b"{}", b"\x00\xff"]),
    shuffle=st.randoms(use_true_random=False),
)
def test_the_fast_path_agrees_with_the_general_parser(
    extra: list[tuple[str, str]], keep: list[bool], body: bytes, shuffle: object
) -> None:
    pairs = [p for p, k in zip(REQUIRED, keep, strict=True) if k] + extra
    shuffle.shuffle(pairs)  # type: ignore[attr-defined]
    check(pairs, body)


def test_the_common_requests_take_the_fast_path() -> None:
    events = [
        make_event(type="order.placed", source="/shop", id="1"),
        make_event(
            type="order.placed",
            source="/shop",
            id="2",
            subject="o-2",
            data=json.dumps({"n": 2}).encode(),
            datacontenttype="application/json",
            extensions={"tenant": "acme", "region": "eu1"},
        ),
        make_event(
            type="t", source="urn:x", id="3", data=b"raw", datacontenttype="text/plain; charset=utf-8"
        ),
    ]
    for event in events:
        headers, body = to_binary(event)
        pairs = [("Host", "127.0.0.1"), ("Content-Length", str(len(body))), *headers.items()]
        assert check(pairs, body), headers


def test_what_it_leaves_to_the_general_parser() -> None:
    leave = [
        [*REQUIRED, ("ce-subject", "caf%C3%A9")],  # percent-encoded
        [*REQUIRED, ("ce-subject", "caf\u00e9")],  # not ASCII
        [*REQUIRED, ("ce-traceparent", new_traceparent())],  # trace context: its own checks
        [*REQUIRED, ("ce-id", "again")],  # a repeated attribute: an error
        [*REQUIRED, ("ce-time", "2026-02-30T00:00:00Z")],  # not a date
        [*REQUIRED[1:], ("ce-specversion", "0.3")],
        [*REQUIRED, ("Content-Type", "bad type")],
        REQUIRED[:3],  # no type
    ]
    for pairs in leave:
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        assert binary_event(headers, b"") is None, pairs
