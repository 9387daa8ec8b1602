"""Names on the server, exactly as SPEC section 10 gives them (and eventing-natss / Dapr use)."""

from __future__ import annotations

DLQ_STREAM = "EVROUTE_DLQ"
DLQ_SUBJECTS = "evroute.dlq.>"
ROUTES_BUCKET = "EVROUTE_ROUTES"
WORKERS_BUCKET = "EVROUTE_WORKERS"
PACE_BUCKET = "EVROUTE_PACE"  # what workers say of a route's pace (throttled, endpoints)
ROUTES_KEY = "routes"


def stream(broker: str) -> str:
    """Broker ``order-events`` → stream ``EVROUTE_ORDER_EVENTS``."""
    return "EVROUTE_" + broker.upper().replace("-", "_")


def subject(broker: str) -> str:
    return f"evroute.{broker}"


def replay_subject(broker: str, route: str) -> str:
    """Where a replayed dead letter re-enters its route alone (only that route's consumer reads it).

    ``evroute.replay.<broker>.<route>`` overlaps no broker subject: a broker named ``replay`` is
    ``evroute.replay``, one token shorter.
    """
    return f"evroute.replay.{broker}.{route}"


def replay_subjects(broker: str) -> str:
    return f"evroute.replay.{broker}.*"


def consumer(route: str) -> str:
    return f"evroute-{route}"


def route_of(consumer_name: str) -> str | None:
    return consumer_name[len("evroute-") :] if consumer_name.startswith("evroute-") else None


def dlq_subject(route: str) -> str:
    return f"evroute.dlq.{route}"


OUTCOMES_STREAM = "EVROUTE_OUTCOMES"  # the recent delivery outcomes (``evroute tail``, the console)
OUTCOMES_SUBJECT = "evroute.outcomes"
