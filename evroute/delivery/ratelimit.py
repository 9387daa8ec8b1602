"""How fast a route may start attempts: its token bucket and a pause asked for by the subscriber.

Both are plain values stepped with the clock the caller passes in (``now``, Unix seconds), so
the worker asks them with its injected clock and tests step them by hand:

- :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` every ``per`` seconds;
  every attempt (a first delivery or a retry) takes one. An event that finds the bucket empty
  waits behind the cursor: it has not been tried, so it spends no attempt.
- :class:`Pace` adds the subscriber's own word: a 429 with ``Retry-After`` (see
  :func:`evroute.delivery.policy.route_pause`) holds the whole route until then, not only
  the event that got it.

::

    >>> pace = Pace(RateLimit(rate=20, per=1.0, burst=1), now=0.0)
    >>> pace.take(0.0), pace.wait(0.0)
    (True, 0.05)
"""

from __future__ import annotations

from evroute.routes.model import RateLimit


class TokenBucket:
    """``limit`` None lets everything through."""

    __slots__ = ("limit", "stamp", "tokens")

    def __init__(self, limit: RateLimit | None, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst) if limit is not None else 0.0
        self.stamp = now

    def configure(self, limit: RateLimit | None, now: float) -> None:
        """A reloaded route: keep the tokens earned so far, within the new burst."""
        if limit == self.limit:
            return
        self._refill(now)
        if limit is not None:
            # A route that had no limit starts with a full bucket, as a new one does.
            earned = self.tokens if self.limit is not None else float(limit.burst)
            self.tokens = min(float(limit.burst), earned)
        self.stamp = max(self.stamp, now)
        self.limit = limit

    def _refill(self, now: float) -> None:
        limit = self.limit
        if limit is None:
            return
        if now > self.stamp:
            self.tokens = min(float(limit.burst), self.tokens + (now - self.stamp) * limit.rate / limit.per)
        self.stamp = max(self.stamp, now)

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0.0: one is there now)."""
        limit = self.limit
        if limit is None:
            return 0.0
        self._refill(now)
        missing = 1.0 - self.tokens
        if missing <= 1e-9:
            return 0.0
        return missing * limit.per / limit.rate

    def take(self, now: float) -> bool:
        """Take a token if there is one."""
        if self.limit is None:
            return True
        if self.wait(now) > 0:
            return False
        self.tokens -= 1.0
        return True

    def give_back(self) -> None:
        """An attempt that took a token did not start after all (nothing was sent)."""
        if self.limit is not None:
            self.tokens = min(float(self.limit.burst), self.tokens + 1.0)


class Pace:
    """A route's rate: its token bucket, and a pause until a time the subscriber named."""

    __slots__ = ("bucket", "paused_until")

    def __init__(self, limit: RateLimit | None, now: float) -> None:
        self.bucket = TokenBucket(limit, now)
        self.paused_until = 0.0

    def configure(self, limit: RateLimit | None, now: float) -> None:
        self.bucket.configure(limit, now)

    def pause_until(self, until: float) -> bool:
        """Hold the route until ``until``; True when this moves the pause later."""
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True

    def wait(self, now: float) -> float:
        """Seconds until an attempt may start (0.0: now)."""
        return max(self.paused_until - now, self.bucket.wait(now), 0.0)

    def throttled(self, now: float) -> bool:
        """Held back now, by the bucket or by the subscriber's pause."""
        return self.wait(now) > 0

    def take(self, now: float) -> bool:
        if self.paused_until > now:
            return False
        return self.bucket.take(now)

    def give_back(self) -> None:
        self.bucket.give_back()


__all__ = ["Pace", "TokenBucket"]
