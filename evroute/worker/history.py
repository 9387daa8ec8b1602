"""What the worker remembers of each settled attempt, for people to look at.

Two records, both cheap on the delivery path:

- :func:`attempt_row` builds the attempt-history row (``store/attempts.py``) of a failed
  attempt, or of the success that ends a run of failures. The settle step hands it to the
  store call that writes the retry row, the dead letter or the removal of the retry row, so
  it is committed in that same transaction. A first-try success builds nothing.
- :class:`Recent` buffers one small tuple per outcome, first-try successes included; the
  engine's batched cursor commit writes the buffer into the bounded ring of
  ``store/outcomes.py`` (``evroute tail`` and the console follow it from other processes).

And :func:`link_reply` remembers which event a stored reply answered.
"""

from __future__ import annotations

import logging

from evroute.delivery.outcome import Outcome
from evroute.errors import EvrouteError
from evroute.routes.model import Route
from evroute.store import links
from evroute.store.attempts import Attempt
from evroute.store.base import Deliveries
from evroute.store.outcomes import RING, Pending

logger = logging.getLogger("evroute.worker")

DELIVERED = "delivered"
RETRYING = "retrying"
DEAD = "dead"


def endpoint(route: Route) -> str:
    return route.mask(route.subscriber.describe())


def attempt_row(
    route: Route, seq: int, attempt: int, outcome: Outcome, started: float, now: float
) -> Attempt:
    duration = max(outcome.elapsed, now - started)
    return Attempt(
        route=route.name,
        seq=seq,
        attempt=attempt,
        at=started,
        duration_ms=duration * 1000.0,
        outcome=outcome.kind.value,
        status=outcome.status,
        error=route.mask(outcome.error) if outcome.error else None,
        body=route.mask_bytes(outcome.body),
        endpoint=route.mask(outcome.endpoint) if outcome.endpoint else endpoint(route),
    )


async def link_reply(
    store: Deliveries, route: Route, parent: int | None, seqs: tuple[int | None, ...]
) -> None:
    """Remember which event a stored reply answered (the console links them both ways).
    The reply is already durable: a link that cannot be written is only logged."""
    if parent is None or parent <= 0 or not seqs or seqs[0] is None:
        return
    try:
        await store.link(seqs[0], parent, links.REPLY, route.name)
    except EvrouteError as exc:
        logger.warning("route %s: reply %d not linked to seq %d: %s", route.name, seqs[0], parent, exc)


class Recent:
    """Outcomes settled since the last cursor commit (bounded: a store that cannot be
    written to for a long time keeps only the newest ``RING``)."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []

    def note(
        self,
        route: Route,
        seq: int,
        attempt: int,
        result: str,
        outcome: Outcome,
        started: float,
        now: float,
    ) -> None:
        pending = self.pending
        pending.append(
            (
                now,
                route.name,
                seq,
                attempt,
                result,
                outcome.status,
                round(max(outcome.elapsed, now - started) * 1000.0, 3),
            )
        )
        if len(pending) > 2 * RING:
            del pending[:-RING]

    def take(self) -> list[Pending]:
        taken, self.pending = self.pending, []
        return taken

    def put_back(self, taken: list[Pending]) -> None:
        """A commit failed: keep the outcomes for the next one, oldest first."""
        self.pending[:0] = taken[-RING:]


__all__ = ["DEAD", "DELIVERED", "RETRYING", "Attempt", "Recent", "attempt_row", "endpoint", "link_reply"]
