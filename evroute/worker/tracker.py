"""Per-route bookkeeping the dispatcher steps through: the cursor watermark and the
circuit breaker. Both are plain objects driven by explicit calls and an injected clock.
"""

from __future__ import annotations

from evroute.routes.model import CircuitBreaker


class Watermark:
    """The cursor of an unordered route, as Knative's Kafka broker OffsetManager keeps it.

    Events are started in seq order and may finish in any order. The committed cursor is
    the highest seq below which everything is finished: ``min(unfinished) - 1``, or the last
    seq read when nothing is outstanding. Committing that (never a finished seq above an
    unfinished one) is what makes a crash redeliver at most the in-flight window.
    """

    __slots__ = ("_pending", "read")

    def __init__(self, position: int) -> None:
        self.read = position  # highest seq handed to this route so far
        self._pending: set[int] = set()

    def start(self, seq: int) -> None:
        self._pending.add(seq)
        if seq > self.read:
            self.read = seq

    def skip(self, seq: int) -> None:
        """A seq read and finished at once (filtered out)."""
        if seq > self.read:
            self.read = seq

    def finish(self, seq: int) -> None:
        self._pending.discard(seq)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def position(self) -> int:
        if self._pending:
            return min(self._pending) - 1
        return self.read


class Breaker:
    """``delivery.circuitBreaker``: closed → open after N consecutive retriable failures → half-open
    after the cooldown (one probe) → closed on success, open again on failure."""

    __slots__ = ("_failures", "_opened_at", "_probing", "config", "state")

    def __init__(self, config: CircuitBreaker | None) -> None:
        self.config = config
        self.state = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self, now: float) -> bool:
        """May one more delivery start now? In half-open state only one probe may run."""
        if self.config is None or self.state == "closed":
            return True
        if self.state == "open":
            if now - self._opened_at < self.config.cooldown:
                return False
            self.state = "half-open"
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def permits(self, now: float) -> bool:
        """Would :meth:`allow` say yes now? (Asking takes no probe.)"""
        if self.config is None or self.state == "closed":
            return True
        if self.state == "open":
            return now - self._opened_at >= self.config.cooldown
        return not self._probing

    def state_at(self, now: float) -> str:
        """The state as ``status`` shows it: an open breaker whose cooldown is over is
        half-open (the next delivery probes), even before one is attempted."""
        if self.state == "open" and self.config is not None and now - self._opened_at >= self.config.cooldown:
            return "half-open"
        return self.state

    def reopen_in(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.config is None or self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.config.cooldown - now)

    @property
    def tripped(self) -> bool:
        """True while the breaker holds deliveries back (open or probing)."""
        return self.config is not None and self.state != "closed"

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = "closed"

    def answered(self) -> None:
        """A permanent failure: the subscriber answered, so it says nothing about its health
        and does not count. A probe that gets one ends the probe and closes the breaker."""
        if self.state == "half-open":
            self.success()

    def failure(self, now: float) -> None:
        if self.config is None:
            return
        self._failures += 1
        if self.state == "half-open" or self._failures >= self.config.consecutive_failures:
            self.state = "open"
            self._opened_at = now
            self._probing = False

    def configure(self, config: CircuitBreaker | None) -> None:
        self.config = config
        if config is None:
            self.success()
