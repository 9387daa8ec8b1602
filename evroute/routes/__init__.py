"""Routes: the model (:mod:`.model`), the loader of routes files (:mod:`.load`, with Knative
documents read by :mod:`.knative`), and comment-preserving edits (:mod:`.edit`)."""

from evroute.routes.model import CircuitBreaker, Delivery, Matcher, Route, RouteSet, Settings, Subscriber

__all__ = ["CircuitBreaker", "Delivery", "Matcher", "Route", "RouteSet", "Settings", "Subscriber"]
