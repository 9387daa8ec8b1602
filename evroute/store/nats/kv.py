"""The two KV buckets: the routes file (``EVROUTE_ROUTES``) and worker heartbeats (``EVROUTE_WORKERS``).

Routes: one key holds the whole routes file as text; its KV revision is the compare-and-set
guard, so two concurrent edits cannot both win (the second is refused, never lost). Workers
watch the key and apply a new revision at once.

Workers: each writes ``{host, pid, since, heartbeat, counters, routes}`` under its id every few
seconds. A worker is live while its heartbeat is recent; the entry itself stays (its counters
still add up in ``status``) until the bucket's max age drops it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from evroute.errors import InvalidInput
from evroute.store.nats import names

WORKERS_MAX_AGE = 86400.0  # a stopped worker's counters stay in `status` for a day
LIVE_FOR = 15.0  # a heartbeat older than this is a worker that has gone


_buckets: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


async def bucket(js: Any, name: str, replicas: int | None, max_age: float | None = None) -> Any:
    """The bucket, made with ``replicas`` copies if it does not exist yet (``None``: only look,
    and None when it does not exist). Looked up once per connection."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError, NotFoundError

    known = _buckets.setdefault(js, {})
    if name in known:
        return known[name]
    try:
        found = await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        if replicas is None:
            return None
        config = KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=replicas, ttl=max_age
        )
        found = await js.create_key_value(config)
    known[name] = found
    return found


async def get_routes(kv: Any) -> tuple[str, int] | None:
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    if kv is None:
        return None
    try:
        entry = await kv.get(names.ROUTES_KEY)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    if entry.value is None:
        return None
    return entry.value.decode("utf-8"), int(entry.revision)


async def put_routes(kv: Any, text: str, revision: int | None) -> int:
    """Write the routes text if the key is still at ``revision`` (0: must not exist; None: any)."""
    from nats.js.errors import KeyWrongLastSequenceError

    data = text.encode("utf-8")
    try:
        if revision is None:
            return int(await kv.put(names.ROUTES_KEY, data))
        if revision == 0:
            return int(await kv.create(names.ROUTES_KEY, data))
        return int(await kv.update(names.ROUTES_KEY, data, last=revision))
    except KeyWrongLastSequenceError:
        raise InvalidInput(
            f"the routes in {names.ROUTES_BUCKET} changed meanwhile (someone else applied a new revision); "
            "nothing written — read them again and retry"
        )
    except Exception as exc:
        if "wrong last sequence" in str(exc).lower() or "key exists" in str(exc).lower():
            raise InvalidInput(
                f"the routes in {names.ROUTES_BUCKET} changed meanwhile (someone else applied a new revision); "
                "nothing written — read them again and retry"
            )
        raise


async def beat(kv: Any, holder: str, record: Mapping[str, Any]) -> None:
    await kv.put(_key(holder), json.dumps(record, separators=(",", ":")).encode())


async def leave(kv: Any, holder: str, record: Mapping[str, Any]) -> None:
    """A worker that stops keeps its counters, marked gone (heartbeat 0)."""
    await kv.put(_key(holder), json.dumps(dict(record, heartbeat=0), separators=(",", ":")).encode())


async def workers(kv: Any) -> list[dict[str, Any]]:
    from nats.js.errors import KeyDeletedError, KeyNotFoundError, NoKeysError

    if kv is None:
        return []
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            continue
        if entry.value:
            out.append(dict(json.loads(entry.value), id=_holder(key)))
    return out


async def put_pace(kv: Any, paces: Sequence[Any]) -> None:
    """A route's pace (:class:`evroute.store.pace.RoutePace`) under the route's name."""
    for p in paces:
        record = {"throttled": p.throttled, "endpoints": p.endpoints, "updated_at": p.updated_at}
        await kv.put(_key(p.route), json.dumps(record, separators=(",", ":")).encode())


async def get_pace(kv: Any, route: str) -> dict[str, Any] | None:
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    if kv is None:
        return None
    try:
        entry = await kv.get(_key(route))
    except (KeyNotFoundError, KeyDeletedError):
        return None
    return dict(json.loads(entry.value)) if entry.value else None


def _key(holder: str) -> str:
    """KV keys allow ``[-/_=.a-zA-Z0-9]``: anything else in a holder id is hex-escaped."""
    return "".join(c if c.isalnum() or c in "-_" else f"={ord(c):02x}" for c in holder)


def _holder(key: str) -> str:
    out, i = [], 0
    while i < len(key):
        if key[i] == "=" and i + 3 <= len(key):
            out.append(chr(int(key[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(key[i])
            i += 1
    return "".join(out)
