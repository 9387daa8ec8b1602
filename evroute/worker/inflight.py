"""The ingress's budget of request bytes being read at once (SPEC 6.1).

Every request body the ingress is reading holds its share of one budget: the Content-Length
up front when there is one (a slow uploader holds what it announced), chunk by chunk when
there is none. A request that does not fit is answered ``503`` with ``Retry-After`` at once,
before its body is read, so many concurrent uploads cannot make the worker buffer without
end. A request alone always fits, however large (within its own size limit): otherwise a
batch bigger than the budget could never be published.

::

    >>> budget = Budget(100)
    >>> a, b = budget.ticket(), budget.ticket()
    >>> a.take(80), b.take(30), b.take(20)
    (True, False, True)
    >>> a.release(); budget.used
    20
"""

from __future__ import annotations

INFLIGHT_FACTOR = 64  # the budget, as a multiple of settings.maxEventBytes (64 MiB by default)
RETRY_AFTER_SECONDS = 1
# A body that sends nothing for this long is given up (408) and its share returned: an upload
# that announces a length and stalls must not hold the budget for as long as it keeps the
# connection open.
BODY_IDLE_SECONDS = 30.0


class Budget:
    """Bytes of request bodies being read, against a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0

    def ticket(self) -> Ticket:
        return Ticket(self)


class Ticket:
    """One request's share of the budget; ``release`` it when the request is done."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (nothing held) when they do not fit beside the others."""
        budget = self.budget
        others = budget.used - self.held
        if others > 0 and budget.used + n > budget.cap:
            return False
        budget.used += n
        self.held += n
        return True

    def release(self) -> None:
        self.budget.used -= self.held
        self.held = 0


__all__ = ["BODY_IDLE_SECONDS", "INFLIGHT_FACTOR", "RETRY_AFTER_SECONDS", "Budget", "Ticket"]
