"""Delivery policy: classification tables, backoff numbers, Retry-After, hops, dead-letter stamps."""

from __future__ import annotations

import base64
import email.utils

import pytest

from evroute.cloudevent import HOPS, make_event
from evroute.delivery.outcome import Kind, Outcome
from evroute.delivery.policy import (
    HOP_LIMIT,
    accept_reply,
    backoff,
    classify_exit,
    classify_status,
    dls_event,
    hops_for_reply,
    next_wait,
    parse_retry_after,
)
from evroute.routes.model import Delivery

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, Kind.SUCCESS),
        (201, Kind.SUCCESS),
        (202, Kind.SUCCESS),
        (204, Kind.SUCCESS),
        (299, Kind.SUCCESS),
        (100, Kind.PERMANENT),
        (300, Kind.PERMANENT),
        (301, Kind.PERMANENT),
        (302, Kind.PERMANENT),
        (304, Kind.PERMANENT),
        (307, Kind.PERMANENT),
        (308, Kind.PERMANENT),
        (400, Kind.PERMANENT),
        (401, Kind.PERMANENT),
        (403, Kind.PERMANENT),
        (404, Kind.RETRIABLE),
        (405, Kind.PERMANENT),
        (406, Kind.PERMANENT),
        (408, Kind.RETRIABLE),
        (409, Kind.RETRIABLE),
        (410, Kind.PERMANENT),
        (413, Kind.PERMANENT),
        (415, Kind.PERMANENT),
        (422, Kind.PERMANENT),
        (425, Kind.PERMANENT),
        (429, Kind.RETRIABLE),
        (451, Kind.PERMANENT),
        (499, Kind.PERMANENT),
        (500, Kind.RETRIABLE),
        (501, Kind.RETRIABLE),
        (502, Kind.RETRIABLE),
        (503, Kind.RETRIABLE),
        (504, Kind.RETRIABLE),
        (599, Kind.RETRIABLE),
        (600, Kind.PERMANENT),
    ],
)
def test_classify_status(status: int, kind: Kind) -> None:
    assert classify_status(status) is kind


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (0, Kind.SUCCESS),
        (1, Kind.RETRIABLE),
        (2, Kind.RETRIABLE),
        (3, Kind.RETRIABLE),
        (64, Kind.RETRIABLE),
        (65, Kind.PERMANENT),
        (66, Kind.RETRIABLE),
        (75, Kind.RETRIABLE),
        (126, Kind.RETRIABLE),
        (137, Kind.RETRIABLE),
        (255, Kind.RETRIABLE),
    ],
)
def test_classify_exit(code: int, kind: Kind) -> None:
    assert classify_exit(code) is kind


def test_exponential_backoff_numbers_with_cap() -> None:
    d = Delivery(backoff_policy="exponential", backoff_delay=0.5, backoff_max=60.0)
    assert [backoff(d, k) for k in range(1, 10)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    d = Delivery(backoff_policy="exponential", backoff_delay=1.0, backoff_max=10.0)
    assert [backoff(d, k) for k in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_linear_backoff_numbers_with_cap() -> None:
    d = Delivery(backoff_policy="linear", backoff_delay=2.0, backoff_max=7.0)
    assert [backoff(d, k) for k in range(1, 6)] == [2.0, 4.0, 6.0, 7.0, 7.0]
    d = Delivery(backoff_policy="linear", backoff_delay=0.25, backoff_max=60.0)
    assert [backoff(d, k) for k in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]


def test_backoff_survives_absurd_retry_numbers() -> None:
    d = Delivery(backoff_policy="exponential", backoff_delay=1.0, backoff_max=60.0)
    assert backoff(d, 5000) == 60.0
    assert backoff(Delivery(backoff_delay=1e300, backoff_max=5.0), 900) == 5.0
    assert backoff(d, 0) == 1.0  # "retry 0" is read as the first retry


def test_backoff_of_zero_delay_is_zero() -> None:
    assert backoff(Delivery(backoff_delay=0.0), 4) == 0.0


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 7 ", NOW) == 7.0
    assert parse_retry_after("0", NOW) == 0.0


def test_parse_retry_after_http_dates() -> None:
    when = email.utils.formatdate(NOW + 90, usegmt=True)  # IMF-fixdate
    assert parse_retry_after(when, NOW) == 90.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0 - 30) == 30.0
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0 - 30) == 30.0  # RFC 850
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", 784111777.0 - 30) == 30.0  # asctime
    assert parse_retry_after(email.utils.formatdate(NOW - 50, usegmt=True), NOW) == 0.0  # past


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "٣", "Mon, 99 Foo 2020"])
def test_parse_retry_after_rejects_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def outcome(status: int | None, retry_after: float | None) -> Outcome:
    return Outcome(Kind.RETRIABLE, status, f"HTTP {status}", None, None, retry_after, 0.1)


def test_next_wait_honours_retry_after_on_429_and_503() -> None:
    d = Delivery(backoff_delay=1.0, backoff_max=60.0, retry_after_max=60.0)
    assert next_wait(d, 1, outcome(429, 30.0)) == 30.0
    assert next_wait(d, 1, outcome(503, 30.0)) == 30.0
    # The backoff wins when it is longer.
    assert next_wait(d, 6, outcome(503, 3.0)) == 32.0
    # Capped at retryAfterMax.
    assert next_wait(d, 1, outcome(429, 3600.0)) == 60.0
    assert next_wait(Delivery(retry_after_max=10.0), 1, outcome(503, 3600.0)) == 10.0


def test_next_wait_ignores_retry_after_elsewhere() -> None:
    d = Delivery(backoff_delay=1.0, backoff_max=60.0, retry_after_max=60.0)
    assert next_wait(d, 2, outcome(500, 30.0)) == 2.0
    assert next_wait(d, 2, outcome(None, 30.0)) == 2.0
    assert next_wait(d, 2, outcome(429, None)) == 2.0


def test_retry_after_max_zero_disables() -> None:
    d = Delivery(backoff_delay=1.0, backoff_max=60.0, retry_after_max=0.0)
    assert next_wait(d, 1, outcome(429, 30.0)) == 1.0
    assert next_wait(d, 3, outcome(503, 30.0)) == 4.0


def test_hops_for_reply() -> None:
    plain = make_event(type="t", id="1")
    assert hops_for_reply(plain) == 1
    assert hops_for_reply(plain.with_attributes(**{HOPS: 3})) == 4
    assert hops_for_reply(plain.with_attributes(**{HOPS: "15"})) == 16
    assert hops_for_reply(plain.with_attributes(**{HOPS: " 2 "})) == 3
    # A producer's nonsense resets the count; it never lets a loop run longer than the limit.
    assert hops_for_reply(plain.with_attributes(**{HOPS: "lots"})) == 1
    assert hops_for_reply(plain.with_attributes(**{HOPS: -40})) == 1
    assert hops_for_reply(plain.with_attributes(**{HOPS: True})) == 1


def test_accept_reply_stamps_hops_and_stops_at_the_limit() -> None:
    parent = make_event(type="t", id="p").with_attributes(**{HOPS: HOP_LIMIT - 1})
    reply = make_event(type="r", id="c").with_attributes(**{HOPS: 0})
    ok = accept_reply(parent, reply, status=200, elapsed=0.1, raw=b"")
    assert ok.kind is Kind.SUCCESS and ok.reply is not None
    assert ok.reply.attributes[HOPS] == HOP_LIMIT
    stop = accept_reply(parent.with_attributes(**{HOPS: HOP_LIMIT}), reply, status=200, elapsed=0.1, raw=b"x")
    assert (stop.kind, stop.error, stop.reply, stop.status, stop.body) == (
        Kind.PERMANENT,
        "hop limit",
        None,
        200,
        b"x",
    )


def test_dls_event_carries_knative_error_extensions() -> None:
    event = make_event(type="order.placed", id="o-1", data=b'{"a":1}', datacontenttype="application/json")
    body = bytes(range(256)) * 8  # 2 KiB
    out = dls_event(event, "http://127.0.0.1:8081/inventory", 503, body)
    assert out.attributes["knativeerrordest"] == "http://127.0.0.1:8081/inventory"
    assert out.attributes["knativeerrorcode"] == 503
    assert base64.b64decode(str(out.attributes["knativeerrordata"])) == body[:1024]
    assert out.data == event.data
    assert {k: v for k, v in out.attributes.items() if not k.startswith("knativeerror")} == dict(
        event.attributes
    )


def test_dls_event_without_a_response() -> None:
    event = make_event(type="t", id="1")
    out = dls_event(event, "python3 handler.py", None, None)
    assert out.attributes["knativeerrorcode"] == 500
    assert "knativeerrordata" not in out.attributes
    # A stale value from an earlier trip through a dead-letter sink does not survive.
    again = dls_event(out.with_attributes(knativeerrordata="b2xk"), "x", 404, b"")
    assert again.attributes["knativeerrorcode"] == 404
    assert "knativeerrordata" not in again.attributes
