"""Publishing: build events from options or read them from a file, validate, then append.

Two promises shape this module. Nothing invalid is half-stored: a file is validated in full
and stored in one transaction, so a bad line anywhere leaves the database as it was. And a
single ``evroute publish`` stays close to the start-up cost of Python: it imports no YAML
parser when the routes file has not changed since it was last read (see
:mod:`evroute.routesconfig`), and one plain event is checked and stored without the CloudEvent
class or ``json`` (:func:`quick_attributes`, :mod:`evroute.store.publishing`).
Reading event files is :mod:`evroute.eventfile`.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from evroute import tracing
from evroute.errors import EventTooLarge, InvalidEvent, InvalidInput
from evroute.routesconfig import RoutesConfig, remember, routes_config
from evroute.store.opener import Credentials, StoreURL, open_store

if TYPE_CHECKING:
    from evroute.cloudevent import AttrValue, CloudEvent

# Neither the CloudEvent class, nor `json`, nor a compiled pattern is loaded at import: a single
# `evroute publish` imports this module, and its start-up time is measured (bench/publish.py).
# The options a plain publish uses take the lean path (quick_attributes); any other input
# goes through cloudevent.make_event, which also words every refusal.

DEFAULT_SOURCE = "/evroute/cli"
DEFAULT_BROKER = "default"
CHUNK = 2000  # events held before a file's transaction opens, then inserted per executemany

_DIGITS = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_BROKER_CHARS = frozenset(_LOWER + _DIGITS + "-")  # [a-z0-9][a-z0-9-]{0,62}, the whole name
_NAME_CHARS = frozenset(_LOWER + _DIGITS)  # [a-z0-9]{1,20}: a CloudEvents attribute name
_OPTION_OF = {
    "id": "--id",
    "source": "--source",
    "type": "--type",
    "subject": "--subject",
    "time": "--time",
    "datacontenttype": "--datacontenttype",
    "dataschema": "--dataschema",
    "data": "--data",
}
# Extensions that cloudevent.validate checks beyond their name and type: they take the full path.
_CHECKED_EXTENSIONS = frozenset(
    ("specversion", "data_base64", "traceparent", "tracestate", "evroutedeliverat")
)


def check_broker(name: str, flag: str = "--broker") -> str:
    if not (0 < len(name) <= 63 and name[0] != "-" and _BROKER_CHARS.issuperset(name)):
        raise InvalidInput(
            f"{flag} {name!r} is not a broker name (lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters)"
        )
    return name


def _is_name(key: str) -> bool:
    return 0 < len(key) <= 20 and _NAME_CHARS.issuperset(key)


# --------------------------------------------------------------------------- one event from options


def parse_extensions(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``--ext``; values stay strings (the CLI has no way to say more)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--ext {item!r} is not KEY=VALUE (e.g. --ext tenant=acme)")
        if not _is_name(key):
            raise InvalidInput(
                f"--ext name {key!r} is invalid: CloudEvents extension names are lower-case letters a-z "
                "and digits 0-9, 1-20 characters"
            )
        if key == "specversion":
            raise InvalidInput("--ext name 'specversion' is a core attribute: evroute publishes 1.0 only")
        if key in _OPTION_OF:
            raise InvalidInput(f"--ext name {key!r} is a core attribute: use {_OPTION_OF[key]} instead")
        if key in out:
            raise InvalidInput(f"--ext {key!r} is given twice")
        out[key] = value
    return out


def read_data(spec: str, stdin: IO[bytes]) -> bytes:
    """``--data``: ``@FILE`` is the file's bytes, ``-`` is standard input, anything else the text."""
    if spec == "-":
        return stdin.read()
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise InvalidInput(f"--data @{path}: cannot read the file ({exc.strerror or exc})") from None
    # Arguments that were not valid UTF-8 arrive as surrogate escapes: give back the bytes.
    return spec.encode("utf-8", "surrogateescape")


def event_from_options(
    *,
    type: str | None,
    source: str | None = None,
    id: str | None = None,
    subject: str | None = None,
    data: bytes | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    time: str | None = None,
    extensions: Mapping[str, AttrValue] | None = None,
) -> CloudEvent:
    """The event ``evroute publish --type …`` describes; InvalidEvent names the option at fault."""
    from evroute.cloudevent import is_json_type, make_event

    if type is None:
        raise InvalidInput("--type is required (the event type, e.g. --type order.placed), or use --file")
    if data is not None and is_json_type(datacontenttype):
        _check_json(data, datacontenttype)
        if datacontenttype is None:
            datacontenttype = "application/json"
    return make_event(
        type=type,
        source=DEFAULT_SOURCE if source is None else source,
        id=id,
        data=data,
        datacontenttype=datacontenttype,
        subject=subject,
        time=time,
        dataschema=dataschema,
        extensions=extensions,
    )


def _check_json(data: bytes, datacontenttype: str | None) -> None:
    import json

    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        from evroute.cloudevent import NESTED_TOO_DEEPLY

        if isinstance(exc, json.JSONDecodeError):
            reason = f"{exc.msg} at column {exc.colno}"
        elif isinstance(exc, RecursionError):
            reason = NESTED_TOO_DEEPLY
        else:
            reason = "not valid UTF-8"
        fix = "name its type, e.g. --datacontenttype text/plain"
        raise InvalidEvent(
            f"--data: not valid JSON ({reason}); to publish other content, {fix}"
            if datacontenttype is None
            else f"--data: not valid JSON ({reason}) but --datacontenttype {datacontenttype} says it is; "
            f"fix the data or {fix}"
        ) from None


def quick_attributes(
    *,
    type: str | None,
    source: str | None = None,
    id: str | None = None,
    subject: str | None = None,
    data: bytes | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    time: str | None = None,
    extensions: Mapping[str, AttrValue] | None = None,
) -> dict[str, AttrValue] | None:
    """The attributes :func:`event_from_options` gives for the same options (a new id and time
    aside), without loading the CloudEvent class or its patterns; None where only the full path
    can decide (``--time``, ``--datacontenttype``, ``--dataschema``, extensions it checks
    further, anything it refuses: it words the refusal).

    Valid attributes are what ``cloudevent.validate`` passes: type, source, id and subject
    non-empty text that encodes as UTF-8, extension names of 1-20 of a-z0-9, string values.
    """
    if type is None or time is not None or datacontenttype is not None or dataschema is not None:
        return None
    for text in (type, source, id, subject):
        if text is not None and not _is_text(text):
            return None
    for key, value in (extensions or {}).items():
        if not (
            _is_name(key)
            and key not in _OPTION_OF
            and key not in _CHECKED_EXTENSIONS
            and isinstance(value, str)
            and _is_utf8(value)
        ):
            return None
    if data is not None:
        import json

        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
    import datetime
    import uuid

    attrs: dict[str, AttrValue] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()) if id is None else id,
        "source": DEFAULT_SOURCE if source is None else source,
        "type": type,
        # as cloudevent.now_rfc3339()
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
    }
    if data is not None:
        attrs["datacontenttype"] = "application/json"
    if subject is not None:
        attrs["subject"] = subject
    if extensions:
        attrs.update(extensions)
    return attrs


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != "" and _is_utf8(value)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def event_size(attrs: Mapping[str, AttrValue], data: bytes | None) -> int:
    """Bytes counted against ``maxEventBytes``, as ``CloudEvent.size`` counts them."""
    total = len(data or b"")
    for key, value in attrs.items():
        total += len(key) + len(str(value).encode("utf-8", "surrogatepass"))
    return total


# --------------------------------------------------------------------------- storing


# Published is a plain class for the reason given in evroute.routesconfig.
class Published:
    """What a publish stored."""

    __slots__ = ("duplicates", "seq", "stored", "warning")

    def __init__(
        self, stored: int, duplicates: int, seq: int | None = None, warning: str | None = None
    ) -> None:
        self.stored = stored
        self.duplicates = duplicates
        self.seq = seq  # a single event: its seq, or None when it was a duplicate
        self.warning = warning  # about the routes file; the events were stored regardless

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Published) and (self.stored, self.duplicates, self.seq, self.warning) == (
            other.stored,
            other.duplicates,
            other.seq,
            other.warning,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Published(stored={self.stored}, duplicates={self.duplicates}, seq={self.seq}, warning={self.warning!r})"


class _Target:
    """The store and routes config of one publish, opened in the order that keeps bad input
    from touching the store: an existing SQLite file is opened at once (the routes cache lives
    there), a new one is created only when there is something valid to store.

    ``single``: one event is stored, on SQLite through the lean
    :class:`~evroute.store.publishing.PublishStore` (nothing of the worker's side loads)."""

    def __init__(
        self, where: str | StoreURL, routes: str, credentials: Credentials | None, *, single: bool = False
    ) -> None:
        self.url = where if isinstance(where, StoreURL) else StoreURL("sqlite", f"sqlite:{where}", path=where)
        self.credentials = credentials
        self.single = single and self.url.kind == "sqlite"
        self.store: Any = None
        if self.url.kind != "sqlite" or os.path.exists(self.url.path):
            self.store = self._open("normal")
        self.config = routes_config(routes, self.store)
        # Spans are exported only with an endpoint configured: nothing of OpenTelemetry loads otherwise.
        tracing.setup(self.config.tracing_endpoint, one_shot=True)

    def _open(self, durability: str) -> Any:
        if self.single:
            from evroute.store.publishing import PublishStore

            return PublishStore(self.url.path, durability=durability)
        return open_store(self.url, durability=durability, credentials=self.credentials)

    def size_check(self) -> Callable[..., None]:
        """``check(event, where="")``: EventTooLarge over ``settings.maxEventBytes``."""
        from evroute.cloudevent import check_size

        limit = self.config.max_event_bytes

        def check(event: CloudEvent, where: str = "") -> None:
            try:
                check_size(event, limit, where)
            except EventTooLarge as exc:
                raise EventTooLarge(f"{exc.message} (settings.maxEventBytes in the routes file)") from None

        return check

    def open(self) -> Any:
        """The store, created if need be, with the positions of new routes in place: an
        EventStore, or a PublishStore when ``single`` on SQLite."""
        if self.store is None:
            self.store = self._open(self.config.durability)
        elif self.config.durability != "normal" and hasattr(self.store, "set_durability"):
            self.store.set_durability(self.config.durability)
        # A store reports its own faults as StoreError (it names the file or the server).
        remember(self.store, self.config)
        if self.config.routes:
            if self.single:  # (name, broker, start) tuples as they are
                self.store.ensure_routes(self.config.routes)
            else:
                from evroute.store.records import RouteStart

                self.store.ensure_routes([RouteStart(*r) for r in self.config.routes])
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def publish_event(
    where: str | StoreURL, routes: str, broker: str, event: CloudEvent, credentials: Credentials | None = None
) -> Published:
    """Store one event (built by :func:`event_from_options`); a duplicate is reported, not an error.
    ``where`` is a store URL, or the path of a SQLite file."""
    return publish_attributes(where, routes, broker, event.attributes, event.data, credentials)


def publish_attributes(
    where: str | StoreURL,
    routes: str,
    broker: str,
    attributes: Mapping[str, AttrValue],
    data: bytes | None = None,
    credentials: Credentials | None = None,
) -> Published:
    """:func:`publish_event` for an event given as its attributes, valid as a CloudEvent's are
    (those of :func:`quick_attributes` or of a ``CloudEvent``), and its data."""
    check_broker(broker)
    target = _Target(where, routes, credentials, single=True)
    try:
        if event_size(attributes, data) > target.config.max_event_bytes:
            from evroute.cloudevent import CloudEvent

            target.size_check()(CloudEvent(attributes, data))  # raises, worded as for every event
        if tracing.exporting():  # the publish span's trace context (evroute.otlp takes a CloudEvent)
            from evroute.cloudevent import CloudEvent

            traced = tracing.ensure(CloudEvent(attributes, data), broker)
            attributes, data = traced.attributes, traced.data
        elif tracing.TRACEPARENT not in attributes:  # an event without a trace gets one
            attributes = {**attributes, tracing.TRACEPARENT: tracing.new_traceparent()}
        store = target.open()
        if target.single:
            seq = store.append_one(broker, attributes, data)
            stored = 0 if seq is None else 1
        else:
            from evroute.cloudevent import CloudEvent

            result = store.append(broker, [CloudEvent(attributes, data)])
            seq = result.seqs[0] if result.seqs else None
            stored = result.stored
    finally:
        target.close()
    return Published(stored, 1 - stored, seq, target.config.warning)


def publish_file(
    where: str | StoreURL,
    routes: str,
    broker: str,
    stream: IO[bytes],
    name: str,
    progress: Callable[[int], None] | None = None,
    credentials: Credentials | None = None,
) -> Published:
    """Store every event of a JSON-lines or JSON-array file, all or nothing.

    Events are validated as they are read. The first ``CHUNK`` are read before the store is
    opened (or created); then the store's ``append_all`` takes the chunks as they come, so
    memory stays flat for any size. A problem found later stops the storing, the rest is still
    checked (every problem is reported), and nothing is stored.
    """
    from evroute.eventfile import Problems, no_events, read_events

    check_broker(broker)
    target = _Target(where, routes, credentials)
    problems = Problems(name)
    events = read_events(stream, name, problems, target.size_check(), progress)
    counted = [0]

    def chunks() -> Iterator[list[CloudEvent]]:
        pending: list[CloudEvent] = []
        for event in events:
            if problems.count:
                continue  # nothing more is stored; reading on only reports every problem
            pending.append(tracing.ensure(event, broker))
            if len(pending) >= CHUNK:
                counted[0] += len(pending)
                yield pending
                pending = []
        if problems.count:
            raise problems.error()
        counted[0] += len(pending)
        if counted[0] == 0:
            raise no_events(name)
        if pending:
            yield pending

    try:
        parts = chunks()
        first = next(parts, None)  # a file that is bad from the start never opens the store
        store = target.open()
        result = store.append_all(broker, itertools.chain([first] if first else [], parts), time.time())
    finally:
        target.close()
    return Published(result.stored, result.duplicates, None, target.config.warning)


__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_SOURCE",
    "Published",
    "RoutesConfig",
    "check_broker",
    "event_from_options",
    "event_size",
    "parse_extensions",
    "publish_attributes",
    "publish_event",
    "publish_file",
    "quick_attributes",
    "read_data",
    "routes_config",
]
