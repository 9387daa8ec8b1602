"""Status on JetStream: positions and lag from consumer info, counters from worker heartbeats.

A route's position is its consumer's ack floor (every event at or below it is finished), its
in-flight count the consumer's ack-pending messages, and what is being retried the messages
the server is redelivering. Delivered / failed counts and the last error are what the workers
report in their heartbeats, summed (a stopped worker's counts still add up).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from evroute.store.base import Cursor, Presence
from evroute.store.nats import kv, names, streams


def _ts(value: Any) -> float:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        text = value.replace("Z", "")
        head, _, frac = text.partition(".")
        stamp = _dt.datetime.fromisoformat(head).replace(tzinfo=_dt.UTC).timestamp()
        return stamp + (float("0." + frac[:6]) if frac else 0.0)
    return 0.0


def position_of(info: Any) -> int:
    """Every event at or below it is finished: the ack floor, or, before the first ack, the
    sequence just before where the consumer was made to start."""
    floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
    start = info.config.opt_start_seq
    return max(floor, int(start) - 1 if start else 0)


def epoch_of(info: Any) -> int:
    """A consumer's creation time in ms: recreating it (``subscribe reset``) moves it."""
    return int(_ts(info.created) * 1000)


async def route_consumers(js: Any) -> list[tuple[str, str, Any]]:
    """(route, broker, consumer info) for every route consumer on every broker stream."""
    out = []
    for broker in await streams.brokers(js):
        for info in await js.consumers_info(names.stream(broker)):
            route = names.route_of(info.name or "")
            if route is not None:
                out.append((route, broker, info))
    return out


async def heartbeats(js: Any) -> list[dict[str, Any]]:
    return await kv.workers(await kv.bucket(js, names.WORKERS_BUCKET, None))


async def cursors(js: Any) -> dict[str, Cursor]:
    beats = await heartbeats(js)
    out = {}
    for route, broker, info in await route_consumers(js):
        delivered = failed = 0
        last_error: str | None = None
        last_error_at: float | None = None
        breakers = set()
        for beat in beats:
            r = (beat.get("routes") or {}).get(route)
            if not r:
                continue
            delivered += int(r.get("delivered", 0))
            failed += int(r.get("failed", 0))
            at = r.get("last_error_at")
            if at is not None and (last_error_at is None or at > last_error_at):
                last_error, last_error_at = r.get("last_error"), float(at)
            if beat.get("heartbeat"):
                breakers.add(r.get("breaker", "closed"))
        created = _ts(info.created)
        floor = info.ack_floor
        out[route] = Cursor(
            route=route,
            broker=broker,
            position=position_of(info),
            epoch=epoch_of(info),
            created_at=created,
            updated_at=_ts(floor.last_active) if floor and floor.last_active else created,
            delivered=delivered,
            failed=failed,
            last_error=last_error,
            last_error_at=last_error_at,
            in_flight=int(info.num_ack_pending or 0),
            breaker="open" if "open" in breakers else ("half-open" if "half-open" in breakers else "closed"),
        )
    return out


async def redelivering(js: Any) -> dict[str, tuple[int, float | None]]:
    return {route: (int(info.num_redelivered or 0), None) for route, _, info in await route_consumers(js)}


async def pending(js: Any, routes: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """(num_pending, num_ack_pending) per route: --once / --drain end when both are 0 everywhere."""
    return {
        route: (int(info.num_pending or 0), int(info.num_ack_pending or 0))
        for route, _, info in await route_consumers(js)
        if routes is None or route in routes
    }


async def presences(js: Any, now: float) -> list[Presence]:
    out = []
    for beat in await heartbeats(js):
        seen = float(beat.get("heartbeat") or 0)
        if not seen or now - seen > kv.LIVE_FOR:
            continue
        out.append(
            Presence(
                holder=str(beat.get("id")),
                pid=int(beat.get("pid", 0)),
                host=str(beat.get("host", "")),
                since=float(beat.get("since", 0)),
                heartbeat=seen,
                counters=_counters(beat),
            )
        )
    return sorted(out, key=lambda p: p.since)


def _counters(beat: dict[str, Any]) -> dict[str, int]:
    """A heartbeat's counters, with what the worker delivered and failed summed over its routes."""
    out = {k: int(v) for k, v in (beat.get("counters") or {}).items()}
    routes = (beat.get("routes") or {}).values()
    out["delivered"] = sum(int(r.get("delivered") or 0) for r in routes)
    out["failed"] = sum(int(r.get("failed") or 0) for r in routes)
    return out


def heartbeat_record(
    holder: str, pid: int, host: str, since: float, now: float, counters: Any, routes: dict[str, Any]
) -> dict[str, Any]:
    return {
        "host": host,
        "pid": pid,
        "since": since,
        "heartbeat": now,
        "counters": dict(counters),
        "routes": json.loads(json.dumps(routes)),
    }
