"""Dead letters as records in stream ``EVROUTE_DLQ``: store, list, annotate, replay, purge.

A record is one message on ``evroute.dlq.<route>`` whose body is a JSON object with every
field of SPEC 5.4 (the event in structured form); its id is its stream sequence. What changes
later — the outcome of the dead-letter-sink delivery, the replay time — is an annotation on
``evroute.dlq.<route>.<id>`` (the latest one wins), because stream messages are immutable.
Replay publishes the event to ``evroute.replay.<broker>.<route>``, which only that route's
consumer reads, with a fresh delivery count; the record goes once the copy is delivered.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

from evroute.cloudevent import from_dict, to_dict
from evroute.errors import NotFound
from evroute.store.base import DeadLetter, NewDeadLetter
from evroute.store.nats import names

DLQ_ID = "Evroute-Dlq-Id"  # header on a replayed copy: the record it came from


async def ensure_stream(js: Any, replicas: int) -> None:
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    config = StreamConfig(
        name=names.DLQ_STREAM,
        subjects=[names.DLQ_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        description="evroute dead letters",
    )
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != 10058:
            raise
        await js.update_stream(config)


def _record(letter: NewDeadLetter) -> bytes:
    return json.dumps(
        {
            "route": letter.route,
            "broker": letter.broker,
            "seq": letter.seq,
            "event": to_dict(letter.event),
            "attempts": letter.attempts,
            "status": letter.status,
            "reason": letter.reason,
            "error": letter.error,
            "body": base64.b64encode(letter.body).decode("ascii") if letter.body is not None else None,
            "first_failed_at": letter.first_failed_at,
            "dead_at": letter.dead_at,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def _letter(dlq_id: int, data: bytes, notes: dict[str, Any]) -> DeadLetter:
    obj = json.loads(data)
    body = obj.get("body")
    return DeadLetter(
        id=dlq_id,
        route=obj["route"],
        broker=obj["broker"],
        seq=obj.get("seq"),
        event=from_dict(obj["event"]),
        attempts=int(obj["attempts"]),
        status=obj.get("status"),
        reason=obj["reason"],
        error=obj.get("error"),
        body=base64.b64decode(body) if body is not None else None,
        first_failed_at=obj.get("first_failed_at"),
        dead_at=float(obj["dead_at"]),
        replayed_at=notes.get("replayed_at"),
        dls_outcome=notes.get("dls_outcome"),
    )


async def add(js: Any, letter: NewDeadLetter, replicas: int = 1) -> int:
    """Store the record and wait for its PubAck: only then may the message be terminated."""
    from nats.js.errors import NoStreamResponseError

    try:
        ack = await js.publish(names.dlq_subject(letter.route), _record(letter), timeout=10.0)
    except NoStreamResponseError:
        await ensure_stream(js, replicas)  # the first dead letter of this cluster
        ack = await js.publish(names.dlq_subject(letter.route), _record(letter), timeout=10.0)
    return int(ack.seq)


async def annotate(js: Any, dlq_id: int, route: str, **notes: Any) -> None:
    current = await _notes(js, route, dlq_id)
    current.update({k: v for k, v in notes.items()})
    subject = f"{names.dlq_subject(route)}.{dlq_id}"
    await js.publish(subject, json.dumps(current).encode(), timeout=10.0)


async def annotate_outcome(js: Any, dlq_id: int, route: str, outcome: str) -> None:
    await annotate(js, dlq_id, route, dls_outcome=outcome)


async def _notes(js: Any, route: str, dlq_id: int) -> dict[str, Any]:
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_last_msg(names.DLQ_STREAM, f"{names.dlq_subject(route)}.{dlq_id}")
    except NotFoundError:
        return {}
    notes: dict[str, Any] = json.loads(raw.data or b"{}")
    return notes


async def get(js: Any, dlq_id: int) -> DeadLetter:
    found = await find(js, dlq_id)
    if found is None:
        raise NotFound(f"no dead letter with id {dlq_id} (see `evroute dlq list`)")
    return found


async def find(js: Any, dlq_id: int) -> DeadLetter | None:
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_msg(names.DLQ_STREAM, dlq_id)
    except NotFoundError:
        return None
    if raw.subject is None or raw.subject.count(".") != 2:
        return None  # an annotation, not a record
    route = raw.subject.split(".", 2)[2]
    return _letter(dlq_id, raw.data or b"", await _notes(js, route, dlq_id))


async def listing(js: Any, route: str | None = None, limit: int | None = None) -> list[DeadLetter]:
    """Records oldest first (as SQLite's ids), their annotations applied."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.DLQ_STREAM)
    except NotFoundError:
        return []
    records: list[tuple[int, bytes, str]] = []
    notes: dict[int, dict[str, Any]] = {}
    seq = int(info.state.first_seq)
    last = int(info.state.last_seq)
    while seq <= last and info.state.messages:
        try:
            raw = await js.get_msg(names.DLQ_STREAM, seq, subject=names.DLQ_SUBJECTS, next=True)
        except NotFoundError:
            break
        seq = int(raw.seq) + 1
        parts = (raw.subject or "").split(".")
        if len(parts) == 3 and (route is None or parts[2] == route):
            records.append((int(raw.seq), raw.data or b"", parts[2]))
        elif len(parts) == 4 and parts[3].isdigit():
            notes[int(parts[3])] = json.loads(raw.data or b"{}")
    out = [_letter(i, data, notes.get(i, {})) for i, data, _ in records]
    return out[:limit] if limit is not None else out


async def delete(js: Any, dlq_id: int, route: str) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.delete_msg(names.DLQ_STREAM, dlq_id)
    except NotFoundError:
        pass
    await js.purge_stream(names.DLQ_STREAM, subject=f"{names.dlq_subject(route)}.{dlq_id}")


async def purge(js: Any, route: str | None = None, before: float | None = None) -> int:
    gone = 0
    for letter in await listing(js, route):
        if before is not None and letter.dead_at >= before:
            continue
        await delete(js, letter.id, letter.route)
        gone += 1
    return gone


async def replay(js: Any, ids: Iterable[int], now: float | None = None) -> int:
    """Each dead letter's event re-enters its route alone, with a fresh delivery count."""
    from evroute.cloudevent import to_json

    stamp = time.time() if now is None else now
    count = 0
    letters = [await get(js, dlq_id) for dlq_id in ids]  # every id checked before anything moves
    for letter in letters:
        dlq_id = letter.id
        headers = {
            DLQ_ID: str(dlq_id),
            "Content-Type": "application/cloudevents+json",
            "Nats-Msg-Id": f"replay-{dlq_id}-{stamp:.6f}",
        }
        await js.publish(
            names.replay_subject(letter.broker, letter.route),
            to_json(letter.event),
            headers=headers,
            timeout=10.0,
        )
        await annotate(js, dlq_id, letter.route, replayed_at=stamp)
        count += 1
    return count


def replayed_from(msg: Any) -> int | None:
    value = (msg.headers or {}).get(DLQ_ID) if msg.headers else None
    return int(value) if value and value.isdigit() else None


async def counts(js: Any) -> dict[str, int]:
    """Records per route, from the stream's per-subject counts (no message is read)."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(names.DLQ_STREAM, subjects_filter="evroute.dlq.*")
    except NotFoundError:
        return {}
    return {subj.split(".", 2)[2]: int(n) for subj, n in (info.state.subjects or {}).items()}
