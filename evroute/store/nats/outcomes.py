"""The recent delivery outcomes on JetStream: stream ``EVROUTE_OUTCOMES``, what ``evroute tail``
and the console follow (SQLite keeps the same ring in a table, ``store/outcomes.py``).

Every worker publishes the outcomes of its batched commit, one message each, on subject
``evroute.outcomes`` with a plain (core) publish: nothing waits for the server's answer, so a
slow or lost server never holds up nor fails a delivery (an outcome published during a
connection loss may be missed by a follower, as a follower too far behind the ring is). The
stream keeps the newest ``RING`` messages (file storage, the cluster's replicas); the stream
sequence is the outcome's ``n``. The event's broker is the route's; its id and type are read
from the broker's stream when a follower reads the outcome (None once the event aged out).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from evroute.store.nats import names, streams
from evroute.store.outcomes import RING, Outcome, Pending


async def ensure_stream(js: Any, replicas: int) -> None:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    config = StreamConfig(
        name=names.OUTCOMES_STREAM,
        subjects=[names.OUTCOMES_SUBJECT],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_msgs=RING,
        storage=StorageType.FILE,
        num_replicas=replicas,
        description="evroute recent delivery outcomes",
    )
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != 10058:  # exists with another configuration
            raise
        await js.update_stream(config)


def encode(p: Pending, broker: str | None) -> bytes:
    at, route, seq, attempt, outcome, status, latency_ms = p
    return json.dumps(
        {
            "at": at,
            "route": route,
            "broker": broker,
            "seq": seq,
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "latency_ms": latency_ms,
        },
        separators=(",", ":"),
    ).encode()


async def publish(nc: Any, recent: Sequence[Pending], broker_of: dict[str, str]) -> None:
    """Queue ``recent`` on the connection (buffered, flushed by the client; no acknowledgement)."""
    for p in recent[-RING:]:
        await nc.publish(names.OUTCOMES_SUBJECT, encode(p, broker_of.get(p[1])))


async def last(js: Any) -> int:
    """The newest ``n`` (0 when none): a follower starts after it."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.OUTCOMES_STREAM)
    except NotFoundError:
        return 0
    return int(info.state.last_seq)


async def after(js: Any, n: int, limit: int, events: dict[tuple[str, int], Any]) -> list[Outcome]:
    """Outcomes newer than ``n``, oldest first; ``events`` caches (broker, seq) -> (id, type)."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.OUTCOMES_STREAM)
    except NotFoundError:
        return []
    first, top = int(info.state.first_seq), int(info.state.last_seq)
    out: list[Outcome] = []
    for seq in range(max(n + 1, first), top + 1):
        if len(out) >= limit:
            break
        try:
            raw = await js.get_msg(names.OUTCOMES_STREAM, seq)
        except NotFoundError:
            continue  # aged out between the info and the read
        try:
            d = json.loads(raw.data or b"")
        except ValueError:
            continue
        broker = d.get("broker")
        ident: tuple[str | None, str | None] = (None, None)
        if broker is not None:
            key = (broker, int(d["seq"]))
            if key not in events:
                found = await streams.scan_one(js, broker, key[1])
                events[key] = (found.event.id, found.event.type) if found is not None else (None, None)
                if len(events) > 4 * RING:
                    events.pop(next(iter(events)))
            ident = events[key]
        out.append(
            Outcome(
                n=seq,
                at=float(d["at"]),
                route=str(d["route"]),
                seq=int(d["seq"]),
                attempt=int(d["attempt"]),
                outcome=str(d["outcome"]),
                status=d.get("status"),
                latency_ms=d.get("latency_ms"),
                broker=broker,
                id=ident[0],
                type=ident[1],
            )
        )
    return out


__all__ = ["after", "encode", "ensure_stream", "last", "publish"]
