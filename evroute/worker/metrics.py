"""Prometheus metrics of one worker: published, delivered, failed, retried, dead-lettered,
in flight, lag and delivery latency, per route and broker.

Each :class:`Metrics` owns a private ``CollectorRegistry`` rather than the process-wide
default one, so two engines in one process (tests, benchmarks) never collide over metric
names, and ``/metrics`` shows exactly this worker's figures.

The engine calls these methods once per delivery, so the labelled children are cached:
``Counter.labels()`` takes a lock and builds a key on every call, a dict lookup does not.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# 1 ms to 30 s: local receivers answer in about a millisecond, the default timeout is 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_ROUTE = ("route", "broker")


class Metrics:
    """The worker's counters, gauges and latency histogram, rendered for ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._published = Counter(
            "evroute_events_published",
            "Events stored in a broker (ingress, replies).",
            ["broker"],
            registry=reg,
        )
        self._delivered = Counter(
            "evroute_deliveries", "Successful deliveries to a route's subscriber.", _ROUTE, registry=reg
        )
        self._failed = Counter(
            "evroute_delivery_failures", "Failed delivery attempts (any reason).", _ROUTE, registry=reg
        )
        self._retried = Counter(
            "evroute_retries_scheduled", "Retries put on the durable retry schedule.", _ROUTE, registry=reg
        )
        self._dead = Counter(
            "evroute_dead_letters",
            "Events a route gave up on (stored as dead letters).",
            _ROUTE,
            registry=reg,
        )
        self._in_flight = Gauge(
            "evroute_in_flight", "Deliveries in flight for a route right now.", _ROUTE, registry=reg
        )
        self._lag = Gauge(
            "evroute_lag_events",
            "Events of the broker after the route's committed cursor.",
            _ROUTE,
            registry=reg,
        )
        self._latency = Histogram(
            "evroute_delivery_latency_seconds",
            "Time from the start of a successful delivery attempt to its response.",
            _ROUTE,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, family: Any, kind: str, *labels: str) -> Any:
        key = (kind, *labels)
        child = self._children.get(key)
        if child is None:
            child = family.labels(*labels)
            self._children[key] = child
        return child

    def published(self, broker: str, n: int = 1) -> None:
        if n > 0:
            self._child(self._published, "published", broker).inc(n)

    def delivered(self, route: str, broker: str, seconds: float) -> None:
        self._child(self._delivered, "delivered", route, broker).inc()
        self._child(self._latency, "latency", route, broker).observe(max(seconds, 0.0))

    def failed(self, route: str, broker: str) -> None:
        self._child(self._failed, "failed", route, broker).inc()

    def retried(self, route: str, broker: str) -> None:
        self._child(self._retried, "retried", route, broker).inc()

    def dead_lettered(self, route: str, broker: str) -> None:
        self._child(self._dead, "dead", route, broker).inc()

    def set_in_flight(self, route: str, broker: str, n: int) -> None:
        self._child(self._in_flight, "in_flight", route, broker).set(n)

    def set_lag(self, route: str, broker: str, n: int) -> None:
        self._child(self._lag, "lag", route, broker).set(n)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type.

        Every name here is a legacy (``[a-zA-Z_:][a-zA-Z0-9_:]*``) name, so the body is valid
        text format 0.0.4, which every Prometheus version scrapes.
        """
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


__all__ = ["LATENCY_BUCKETS", "Metrics"]
