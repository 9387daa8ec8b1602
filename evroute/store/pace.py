"""A route's pace as the worker last reported it: throttled (its rate limit or a subscriber's
``Retry-After`` holds it back) and, for a consumer group, each endpoint's counts and health.

The worker writes a row only when something in it changed, in the same rhythm as its cursor
commits; ``status`` reads it. A route no worker has reported on has no row (not throttled).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evroute.store.db import Store


@dataclass(frozen=True, slots=True)
class RoutePace:
    route: str
    throttled: bool
    endpoints: list[dict[str, Any]] | None  # one entry per endpoint of subscriber.uris
    updated_at: float


def put(store: Store, paces: Iterable[RoutePace]) -> None:
    rows = [
        (p.route, int(p.throttled), None if p.endpoints is None else json.dumps(p.endpoints), p.updated_at)
        for p in paces
    ]
    if not rows:
        return
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO route_pace (route, throttled, endpoints, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(route) DO UPDATE SET throttled = excluded.throttled, "
            "endpoints = excluded.endpoints, updated_at = excluded.updated_at",
            rows,
        )


def get(store: Store, route: str) -> RoutePace | None:
    row = store.conn.execute(
        "SELECT route, throttled, endpoints, updated_at FROM route_pace WHERE route = ?", (route,)
    ).fetchone()
    if row is None:
        return None
    return RoutePace(row[0], bool(row[1]), None if row[2] is None else json.loads(row[2]), float(row[3]))


def clear(store: Store, routes: Iterable[str] | None = None) -> None:
    """Forget what a worker said (it stopped: nothing is throttled without one)."""
    with store.write() as conn:
        if routes is None:
            conn.execute("DELETE FROM route_pace")
        else:
            conn.executemany("DELETE FROM route_pace WHERE route = ?", [(r,) for r in routes])


__all__ = ["RoutePace", "clear", "get", "put"]
