"""The values on a single ``publish``'s path, apart from the rest of the seam's types
(:mod:`evroute.store.base`): defining a dataclass costs most of a millisecond at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from evroute.cloudevent import CloudEvent


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int  # log seq (SQLite) / stream sequence (JetStream): a broker's publish order
    broker: str
    published_at: float
    event: CloudEvent
    attempt: int = 1  # the attempt this read is (JetStream: delivery count)
    token: Any = None  # store-private handle to settle this read with


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: int
    duplicates: int
    seqs: tuple[int | None, ...] = ()  # per event for small appends; None = duplicate


class RouteStart(NamedTuple):
    """Where a route begins when the store first sees it (a tuple: cheap to define and build)."""

    name: str
    broker: str
    start: str  # "earliest" | "latest"


__all__ = ["AppendResult", "RouteStart", "StoredEvent"]
