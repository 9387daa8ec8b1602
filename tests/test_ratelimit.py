"""Token bucket, the subscriber's pause and the endpoint picker, stepped on a hand-held clock."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evroute.delivery.endpoints import Endpoints
from evroute.delivery.outcome import Kind, failure, success
from evroute.delivery.policy import endpoint_unhealthy, route_pause
from evroute.delivery.ratelimit import Pace, TokenBucket
from evroute.routes.model import Delivery, RateLimit


def test_bucket_spaces_attempts_at_the_rate_after_the_burst() -> None:
    bucket = TokenBucket(RateLimit(rate=20, per=1.0, burst=1), now=0.0)
    started = []
    now = 0.0
    while len(started) < 60:
        wait = bucket.wait(now)
        if wait > 0:
            now += wait
            continue
        assert bucket.take(now)
        started.append(now)
    assert started[0] == 0.0
    assert started[-1] - started[0] == pytest.approx(59 / 20)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(started)}
    assert gaps == {0.05}


def test_bucket_burst_then_rate_and_no_more_than_burst_saved() -> None:
    bucket = TokenBucket(RateLimit(rate=10, per=60.0, burst=3), now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait(100.0) == pytest.approx(6.0)
    assert not bucket.take(105.9)
    assert bucket.take(106.0)
    # A long quiet spell saves up at most `burst` tokens.
    assert [bucket.take(10_000.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_without_limit_never_waits() -> None:
    bucket = TokenBucket(None, now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))
    assert bucket.wait(0.0) == 0.0


def test_bucket_reconfigured_keeps_what_it_earned_within_the_new_burst() -> None:
    bucket = TokenBucket(RateLimit(rate=1, per=1.0, burst=10), now=0.0)
    for _ in range(10):
        assert bucket.take(0.0)
    bucket.configure(RateLimit(rate=100, per=1.0, burst=2), now=0.5)
    assert bucket.take(0.5) is False  # half a token earned at the old rate
    assert bucket.wait(0.5) == pytest.approx(0.005)
    assert bucket.take(0.505) and bucket.take(0.505) is False
    bucket.configure(None, now=1.0)
    assert bucket.take(1.0)


def test_bucket_gives_back_a_token_not_used() -> None:
    bucket = TokenBucket(RateLimit(rate=1, per=10.0, burst=1), now=0.0)
    assert bucket.take(0.0)
    bucket.give_back()
    assert bucket.take(0.0)
    assert not bucket.take(0.0)


def test_pace_holds_the_route_until_the_subscriber_says() -> None:
    pace = Pace(None, now=0.0)
    assert not pace.throttled(0.0)
    assert pace.pause_until(30.0)
    assert not pace.pause_until(20.0)  # an earlier end never shortens the pause
    assert pace.throttled(10.0) and pace.wait(10.0) == 20.0
    assert not pace.take(29.9)
    assert pace.take(30.0)


def test_429_with_retry_after_pauses_the_route_up_to_retry_after_max() -> None:
    d = Delivery(retry_after_max=60.0)
    slow = failure(Kind.RETRIABLE, "HTTP 429", 0.01, status=429, retry_after=5.0)
    assert route_pause(d, slow) == 5.0
    assert route_pause(d, failure(Kind.RETRIABLE, "HTTP 429", 0.0, status=429, retry_after=600.0)) == 60.0
    assert route_pause(d, failure(Kind.RETRIABLE, "HTTP 429", 0.0, status=429)) is None
    assert route_pause(d, failure(Kind.RETRIABLE, "HTTP 503", 0.0, status=503, retry_after=5.0)) is None
    assert route_pause(Delivery(retry_after_max=0.0), slow) is None


@pytest.mark.parametrize(
    ("outcome", "unhealthy"),
    [
        (failure(Kind.RETRIABLE, "connection refused", 0.0), True),
        (failure(Kind.RETRIABLE, "timeout after 1s", 1.0), True),
        (failure(Kind.RETRIABLE, "HTTP 503", 0.0, status=503), True),
        (failure(Kind.RETRIABLE, "HTTP 500", 0.0, status=500), True),
        (failure(Kind.RETRIABLE, "HTTP 429", 0.0, status=429), False),
        (failure(Kind.RETRIABLE, "HTTP 404", 0.0, status=404), False),
        (failure(Kind.PERMANENT, "HTTP 400", 0.0, status=400), False),
        (success(200, 0.0), False),
    ],
)
def test_which_failures_take_an_endpoint_out(outcome, unhealthy: bool) -> None:  # type: ignore[no-untyped-def]
    assert endpoint_unhealthy(outcome) is unhealthy


def test_picker_takes_turns_and_prefers_fewest_in_flight() -> None:
    group = Endpoints(("http://a/", "http://b/", "http://c/"), cooldown=10.0)
    one_at_a_time = []
    for _ in range(9):
        uri = group.pick(0.0)
        one_at_a_time.append(uri)
        group.finish(uri, ok=True, unhealthy=False, now=0.0)
    assert Counter(one_at_a_time) == {"http://a/": 3, "http://b/": 3, "http://c/": 3}
    busy = [group.pick(1.0) for _ in range(3)]
    assert sorted(busy) == ["http://a/", "http://b/", "http://c/"]
    group.finish("http://b/", ok=True, unhealthy=False, now=1.0)
    assert group.pick(1.0) == "http://b/"  # the only one with nothing in flight


def test_failing_endpoint_is_skipped_for_the_cooldown_while_others_are_healthy() -> None:
    group = Endpoints(("http://a/", "http://b/"), cooldown=10.0)
    uri = group.pick(0.0)
    group.finish(uri, ok=False, unhealthy=True, now=0.0, error="connection refused")
    other = ({"http://a/", "http://b/"} - {uri}).pop()
    picks = []
    for t in range(10):
        p = group.pick(float(t))
        picks.append(p)
        group.finish(p, ok=True, unhealthy=False, now=float(t))
    assert set(picks) == {other}
    assert group.pick(10.0) == uri  # the cooldown is over
    stats = {s["uri"]: s for s in group.stats(5.0)}
    assert stats[uri]["healthy"] is False and stats[uri]["failed"] == 1
    assert stats[uri]["last_error"] == "connection refused"


def test_when_every_endpoint_is_cooling_all_are_tried() -> None:
    group = Endpoints(("http://a/", "http://b/"), cooldown=10.0)
    for _ in range(2):
        uri = group.pick(0.0)
        group.finish(uri, ok=False, unhealthy=True, now=0.0)
    assert group.pick(1.0) in {"http://a/", "http://b/"}


def test_4xx_does_not_cool_an_endpoint_and_a_reload_keeps_counts() -> None:
    group = Endpoints(("http://a/",), cooldown=10.0)
    uri = group.pick(0.0)
    group.finish(uri, ok=False, unhealthy=False, now=0.0)
    assert group.all[uri].healthy(0.1)
    group.configure(("http://a/", "http://b/"), cooldown=1.0)
    assert group.all["http://a/"].failed == 1 and group.cooldown == 1.0
    group.finish("http://gone/", ok=True, unhealthy=False, now=0.0)  # removed meanwhile: ignored


def test_route_flow_picks_endpoints_pauses_on_429_and_reports_changes() -> None:
    from dataclasses import replace

    from evroute.routes.model import Route, Subscriber
    from evroute.worker.flow import RouteFlow

    route = Route(
        name="r",
        subscriber=Subscriber(uris=("http://a/", "http://b/")),
        delivery=Delivery(rate_limit=RateLimit(rate=1, per=1.0, burst=1), retry_after_max=30.0),
    )
    flow = RouteFlow(route, now=0.0)
    assert flow.wait(0.0) == 0.0 and flow.take(0.0)
    assert flow.wait(0.0) == 1.0
    first = flow.target(0.0)
    assert first.uri == "http://a/" and first.uris == ()
    report = flow.report(0.0)
    assert report is not None and report.throttled and report.endpoints is not None
    assert flow.report(0.0) is None  # nothing changed since
    down = replace(failure(Kind.RETRIABLE, "HTTP 503", 0.0, status=503), endpoint=first.uri)
    assert flow.finish(down, now=0.5) is False
    assert flow.target(0.6).uri == "http://b/"
    assert flow.target(0.7).uri == "http://b/"  # a is cooling down for 10 s
    slow = replace(
        failure(Kind.RETRIABLE, "HTTP 429", 0.0, status=429, retry_after=20.0), endpoint="http://b/"
    )
    assert flow.finish(slow, now=1.0) is True
    assert flow.group.all["http://b/"].failed == 1 and flow.group.all["http://b/"].healthy(1.0)
    assert flow.wait(5.0) == 16.0
    flow.update(replace(route, delivery=Delivery(rate_limit=None)), now=2.0)
    assert flow.wait(21.0) == 0.0
    single = RouteFlow(Route(name="s", subscriber=Subscriber(uri="http://c/")), now=0.0)
    assert single.target(0.0) == Subscriber(uri="http://c/")
    report = single.report(0.0)
    assert report is not None and report.endpoints is None and not report.throttled


@given(
    rate=st.integers(1, 50),
    per=st.sampled_from([0.1, 1.0, 60.0]),
    burst=st.integers(1, 20),
    steps=st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=200),
)
def test_bucket_never_lets_more_through_than_burst_plus_rate(
    rate: int, per: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(RateLimit(rate=rate, per=per, burst=burst), now=0.0)
    now, taken = 0.0, []
    for step in steps:
        now += step * per / rate
        while bucket.take(now):
            taken.append(now)
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            window = taken[j] - start
            assert j - i + 1 <= burst + window * rate / per + 1e-6
