"""A route's flow at run time: how fast it may start attempts (rate limit, a subscriber's
``Retry-After``), which endpoint of a consumer group takes each attempt, and what ``status``
is told about both. The dispatcher and the retrier ask :meth:`RouteFlow.wait` before they
start an attempt and :meth:`RouteFlow.take` when they do; the settle step reports each
outcome with :meth:`RouteFlow.finish`.

Nothing here sleeps: times are passed in from the worker's (injectable) clock, and whoever
waits on a throttled route sleeps until :meth:`RouteFlow.wait` says, woken sooner by a change.
"""

from __future__ import annotations

from dataclasses import replace

from evroute.delivery.endpoints import Endpoints
from evroute.delivery.outcome import Outcome
from evroute.delivery.policy import endpoint_unhealthy, route_pause
from evroute.delivery.ratelimit import Pace
from evroute.routes.model import Route, Subscriber
from evroute.store.pace import RoutePace

THROTTLED_FOR = 1.0


class RouteFlow:
    def __init__(self, route: Route, now: float) -> None:
        self.route = route
        self.pace = Pace(route.delivery.rate_limit, now)
        self.group = Endpoints(route.subscriber.uris, route.delivery.endpoint_cooldown)
        self._reported: tuple[bool, object] | None = None
        self.held_at = float("-inf")  # when an attempt last had to wait for the rate or a pause

    def update(self, route: Route, now: float | None = None) -> None:
        """A reloaded route: the bucket keeps its tokens, the endpoints their counts."""
        self.route = route
        self.pace.configure(route.delivery.rate_limit, self.pace.bucket.stamp if now is None else now)
        self.group.configure(route.subscriber.uris, route.delivery.endpoint_cooldown)

    # ------------------------------------------------------------------ may an attempt start?

    def wait(self, now: float) -> float:
        """Seconds until the rate limit and any Retry-After pause let an attempt start."""
        return self.pace.wait(now)

    def holds(self, now: float) -> bool:
        """Whether an attempt about to start must wait (remembered for ``status``)."""
        if self.pace.wait(now) > 0:
            self.held_at = now
            return True
        return False

    def take(self, now: float) -> bool:
        """Spend a token for an attempt about to start (False: wait first)."""
        return self.pace.take(now)

    def give_back(self) -> None:
        """A token taken for an attempt that did not start after all."""
        self.pace.give_back()

    def throttled(self, now: float) -> bool:
        return self.pace.throttled(now)

    # ------------------------------------------------------------------ one attempt

    def target(self, now: float) -> Subscriber:
        """Where this attempt goes: the route's subscriber, or one endpoint of its group."""
        sub = self.route.subscriber
        if not sub.uris:
            return sub
        return replace(sub, uri=self.group.pick(now), uris=())

    def finish(self, outcome: Outcome, now: float) -> bool:
        """Account for an attempt's outcome (``outcome.endpoint``: where it went in a consumer
        group); True when the route is now paused by the subscriber's Retry-After."""
        if self.route.subscriber.uris and outcome.endpoint is not None:
            self.group.finish(
                outcome.endpoint,
                ok=outcome.ok,
                unhealthy=endpoint_unhealthy(outcome),
                now=now,
                error=self.route.mask(outcome.error) if outcome.error else None,
            )
        pause = route_pause(self.route.delivery, outcome)
        return pause is not None and self.pace.pause_until(now + pause)

    # ------------------------------------------------------------------ status

    def unreport(self) -> None:
        """The last report was not stored: send the next one whatever it holds."""
        self._reported = None

    def report(self, now: float) -> RoutePace | None:
        """What ``status`` should show, when it changed since the last report."""
        # Throttled: held back now, or an attempt had to wait within the last second (a route
        # that sends at exactly its rate is throttled even at the instant a token is free).
        throttled = self.pace.throttled(now) or now - self.held_at < THROTTLED_FOR
        endpoints = None
        if self.route.subscriber.uris:
            endpoints = [
                {k: (self.route.mask(v) if isinstance(v, str) else v) for k, v in e.items()}
                for e in self.group.stats(now)
            ]
        key = (throttled, endpoints)
        if key == self._reported:
            return None
        self._reported = key
        return RoutePace(self.route.name, throttled, endpoints, now)


__all__ = ["RouteFlow"]
