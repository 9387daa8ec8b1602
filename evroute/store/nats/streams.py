"""A stream per broker; appending with dedup; reading the log back for the commands.

Stream ``EVROUTE_<B>`` holds subject ``evroute.<B>`` (what producers publish to) and
``evroute.replay.<B>.*`` (a replayed dead letter, read only by its own route's consumer). File
storage, replicas and max age come from the settings; the duplicate window bounds how long a
second publish of the same ``(source, id)`` is recognised.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evroute.cloudevent import CloudEvent
from evroute.errors import InvalidEvent, InvalidInput, StoreError
from evroute.store.base import AppendResult, StoredEvent
from evroute.store.nats import names, wire

DEFAULT_MAX_AGE = 7 * 86400.0  # P7D: a stream needs a bound, SQLite's "forever" is not one
DEFAULT_DUPLICATE_WINDOW = 120.0  # 2m, the server's own default


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 1
    max_age: float = DEFAULT_MAX_AGE
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW


def stream_config(broker: str, settings: StreamSettings) -> Any:
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=names.stream(broker),
        subjects=[names.subject(broker), names.replay_subjects(broker)],
        retention=RetentionPolicy.LIMITS,  # every route reads every event: limits, not work-queue
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.max_age,
        duplicate_window=min(settings.duplicate_window, settings.max_age),
        description=f"evroute broker {broker}",
    )


def usable(broker: str) -> None:
    """A broker whose stream would be one of evroute's own (dead letters, recent outcomes)."""
    if names.stream(broker) in (names.DLQ_STREAM, names.OUTCOMES_STREAM):
        raise InvalidInput(f"broker '{broker}' is reserved on a NATS store (its stream is evroute's own)")


async def ensure_stream(js: Any, broker: str, settings: StreamSettings) -> None:
    """Create the broker's stream, or bring an existing one to these settings."""
    from nats.js.errors import BadRequestError

    usable(broker)
    config = stream_config(broker, settings)
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != 10058:  # "stream name already in use with a different configuration"
            raise StoreError(f"cannot create stream {config.name}: {exc.description}")
        await js.update_stream(config)


async def append(js: Any, broker: str, events: Sequence[CloudEvent]) -> AppendResult:
    """Publish every event and wait for every PubAck; a duplicate's PubAck says so.

    Many events go out with async publishes (one round trip for the lot, not one each). A
    stream has no transaction: when some PubAcks fail, the others are stored — the error says
    how many, and publishing the same events again stores only the missing ones (dedup).
    """
    usable(broker)
    subject = names.subject(broker)
    if len(events) == 1:
        data, headers = wire.encode(events[0])
        ack = await _publish(js, subject, data, headers)
        return AppendResult(
            0 if ack.duplicate else 1, 1 if ack.duplicate else 0, (None if ack.duplicate else ack.seq,)
        )
    futures = []
    for event in events:
        data, headers = wire.encode(event)
        futures.append(await js.publish_async(subject, data, headers=headers, wait_stall=30.0))
    results = await asyncio.gather(*futures, return_exceptions=True)
    stored = duplicates = 0
    failed: list[BaseException] = []
    seqs: list[int | None] = []
    for res in results:
        if isinstance(res, BaseException):
            failed.append(res)
            seqs.append(None)
        elif res.duplicate:
            duplicates += 1
            seqs.append(None)
        else:
            stored += 1
            seqs.append(res.seq)
    if failed and stored + duplicates == 0 and all(_no_stream(e) for e in failed):
        from nats.js.errors import NoStreamResponseError

        raise NoStreamResponseError  # no stream yet: the caller makes it and publishes again
    if failed:
        raise StoreError(
            f"stream {names.stream(broker)}: {len(failed)} of {len(events)} events were not acknowledged "
            f"({_text(failed[0])}); {stored} stored, {duplicates} duplicates — publishing the same "
            "events again stores only the missing ones"
        )
    return AppendResult(stored, duplicates, tuple(seqs) if len(events) <= 1000 else ())


async def _publish(js: Any, subject: str, data: bytes, headers: dict[str, str]) -> Any:
    from nats.errors import Error as NatsError
    from nats.js.errors import NoStreamResponseError

    try:
        return await js.publish(subject, data, headers=headers, timeout=10.0)
    except NoStreamResponseError:
        raise  # no stream yet: the caller makes it
    except (NatsError, TimeoutError) as exc:
        raise StoreError(f"publish to {subject} was not acknowledged: {_text(exc)}")


def _no_stream(exc: BaseException) -> bool:
    from nats.errors import NoRespondersError
    from nats.js.errors import NoStreamResponseError

    return isinstance(exc, NoRespondersError | NoStreamResponseError)


def _text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _time(value: Any) -> float:
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")[:26] + "+00:00").timestamp()
    return 0.0


def stored(broker: str, seq: int, published_at: float, data: bytes, headers: Any) -> StoredEvent | None:
    """A stream message as the seam's StoredEvent; None for one that is not a CloudEvent."""
    try:
        event = wire.decode(data, headers)
    except InvalidEvent:
        return None
    return StoredEvent(seq=seq, broker=broker, published_at=published_at, event=event)


async def brokers(js: Any) -> list[str]:
    """Every broker that has a stream, read back from the streams' subjects."""
    out = []
    for info in await js.streams_info():
        name = info.config.name or ""
        if not name.startswith("EVROUTE_") or name in (names.DLQ_STREAM, names.OUTCOMES_STREAM):
            continue
        for subj in info.config.subjects or ():
            if subj.startswith("evroute.") and subj.count(".") == 1:
                out.append(subj.split(".", 1)[1])
    return sorted(out)


async def last_seq(js: Any, broker: str) -> int:
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.stream(broker))
    except NotFoundError:
        return 0
    return int(info.state.last_seq)


async def scan(js: Any, broker: str, newest_first: bool, limit: int | None, want: Any) -> list[StoredEvent]:
    """Events of ``broker`` (published subject only) that ``want(StoredEvent)`` accepts."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.stream(broker))
    except NotFoundError:
        return []
    first, last = int(info.state.first_seq), int(info.state.last_seq)
    if last == 0:
        return []
    out: list[StoredEvent] = []
    seqs = range(last, first - 1, -1) if newest_first else range(first, last + 1)
    for seq in seqs:
        try:
            raw = await js.get_msg(names.stream(broker), seq, subject=None)
        except NotFoundError:
            continue  # deleted or aged out
        if raw.subject != names.subject(broker):
            continue
        ev = stored(broker, seq, _time(raw.time), raw.data or b"", raw.headers)
        if ev is not None and want(ev):
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
    return out


async def scan_one(js: Any, broker: str, seq: int) -> StoredEvent | None:
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_msg(names.stream(broker), seq)
    except NotFoundError:
        return None
    if raw.subject != names.subject(broker):
        return None
    return stored(broker, seq, _time(raw.time), raw.data or b"", raw.headers)
