"""The watermark and the circuit breaker, stepped by hand with an injected clock."""

from __future__ import annotations

from evroute.routes.model import CircuitBreaker
from evroute.worker.tracker import Breaker, Watermark


def test_watermark_stops_below_the_first_unfinished_seq() -> None:
    mark = Watermark(10)
    assert mark.position == 10
    for seq in (11, 12, 14, 15):
        mark.start(seq)
    mark.skip(13)  # filtered out between started events
    assert mark.position == 10
    mark.finish(12)
    mark.finish(14)
    assert mark.position == 10  # 11 still out
    mark.finish(11)
    assert mark.position == 14  # 15 still out
    mark.finish(15)
    assert mark.position == 15 and mark.in_flight == 0
    mark.skip(20)
    assert mark.position == 20


def test_breaker_opens_after_n_failures_probes_after_cooldown_and_closes_on_success() -> None:
    b = Breaker(CircuitBreaker(consecutive_failures=3, cooldown=10.0))
    assert b.allow(0.0) and b.state == "closed"
    b.failure(1.0)
    b.failure(2.0)
    assert b.state == "closed"
    b.success()
    b.failure(3.0)
    b.failure(4.0)
    b.failure(5.0)
    assert b.state == "open" and not b.allow(6.0) and b.reopen_in(6.0) == 9.0
    assert b.allow(15.0) and b.state == "half-open"
    assert not b.allow(15.0)  # one probe at a time
    b.failure(16.0)
    assert b.state == "open" and not b.allow(20.0)
    assert b.allow(26.0)
    b.success()
    assert b.state == "closed" and b.allow(26.0) and b.allow(26.0)


def test_no_breaker_configured_always_allows() -> None:
    b = Breaker(None)
    for t in range(100):
        b.failure(float(t))
    assert b.allow(100.0) and b.state == "closed" and not b.tripped
