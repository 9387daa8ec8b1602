"""Time as evroute handles it: Unix seconds inside, RFC 3339 UTC strings outside."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable

Clock = Callable[[], float]
wall: Clock = time.time


def rfc3339(ts: float | None) -> str | None:
    """``2026-01-02T15:04:05.123Z`` for a Unix time; None stays None."""
    if ts is None:
        return None
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time (a naive time is taken as UTC); None if unparseable."""
    try:
        moment = _dt.datetime.fromisoformat(text.strip().replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()
