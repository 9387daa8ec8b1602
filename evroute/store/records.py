"""The values on a single ``publish``'s path, apart from the rest of the seam's types
(:mod:`evroute.store.base`). NamedTuples, not dataclasses: defining a dataclass costs most of
a millisecond at start-up, paid by every ``evroute publish`` process."""

from __future__ import annotations

from typing import Any, NamedTuple

from evroute.cloudevent import CloudEvent


class StoredEvent(NamedTuple):
    seq: int  # log seq (SQLite) / stream sequence (JetStream): a broker's publish order
    broker: str
    published_at: float
    event: CloudEvent
    attempt: int = 1  # the attempt this read is (JetStream: delivery count)
    token: Any = None  # store-private handle to settle this read with


class AppendResult(NamedTuple):
    stored: int
    duplicates: int
    seqs: tuple[int | None, ...] = ()  # per event for small appends; None = duplicate


class RouteStart(NamedTuple):
    """Where a route begins when the store first sees it (a tuple: cheap to define and build)."""

    name: str
    broker: str
    start: str  # "earliest" | "latest"


__all__ = ["AppendResult", "RouteStart", "StoredEvent"]
