"""Competing consumers: which of a route's ``uris`` takes the next attempt.

Each attempt goes to the healthy endpoint with the fewest attempts in flight (ties to the one
that has been given the fewest so far, so a route delivering one at a time still takes turns).
An endpoint whose attempt failed with a transport error or a 5xx
(:func:`evroute.delivery.policy.endpoint_unhealthy`) is skipped for ``endpointCooldown`` while
another is healthy; when none is, every endpoint is tried again rather than none, so a group
that is down as a whole behaves like a single subscriber that is down (retries, breaker).

The clock is passed in (``now``); nothing here sleeps or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Endpoint:
    uri: str
    in_flight: int = 0
    started: int = 0
    delivered: int = 0
    failed: int = 0
    cool_until: float = 0.0
    last_error: str | None = None

    def healthy(self, now: float) -> bool:
        return self.cool_until <= now


class Endpoints:
    def __init__(self, uris: tuple[str, ...], cooldown: float) -> None:
        self.cooldown = cooldown
        self.all: dict[str, Endpoint] = {u: Endpoint(u) for u in uris}

    def configure(self, uris: tuple[str, ...], cooldown: float) -> None:
        """A reloaded route: endpoints that stay keep their counts and cooldowns."""
        self.cooldown = cooldown
        self.all = {u: self.all.get(u) or Endpoint(u) for u in uris}

    def pick(self, now: float) -> str:
        """The endpoint for the next attempt (counted as in flight until :meth:`finish`)."""
        candidates = [e for e in self.all.values() if e.healthy(now)] or list(self.all.values())
        chosen = min(candidates, key=lambda e: (e.in_flight, e.started))
        chosen.in_flight += 1
        chosen.started += 1
        return chosen.uri

    def finish(self, uri: str, *, ok: bool, unhealthy: bool, now: float, error: str | None = None) -> None:
        """An attempt to ``uri`` is over; ``unhealthy``: skip the endpoint for the cooldown."""
        e = self.all.get(uri)
        if e is None:  # removed by a reload while the attempt ran
            return
        e.in_flight = max(0, e.in_flight - 1)
        if ok:
            e.delivered += 1
            e.cool_until = 0.0
            return
        e.failed += 1
        e.last_error = error
        if unhealthy:
            e.cool_until = max(e.cool_until, now + self.cooldown)

    def stats(self, now: float) -> list[dict[str, object]]:
        """One entry per endpoint for ``status``: uri, healthy, in flight, delivered, failed."""
        return [
            {
                "uri": e.uri,
                "healthy": e.healthy(now),
                "cooldown_until": e.cool_until if not e.healthy(now) else None,
                "in_flight": e.in_flight,
                "delivered": e.delivered,
                "failed": e.failed,
                "last_error": e.last_error,
            }
            for e in self.all.values()
        ]


__all__ = ["Endpoint", "Endpoints"]
