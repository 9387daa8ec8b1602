"""Publishing: build events from options or read them from a file, validate, then append.

Two promises shape this module. Nothing invalid is half-stored: a file is validated in full
and stored in one transaction, so a bad line anywhere leaves the database as it was. And a
single ``evroute publish`` stays close to the start-up cost of Python: it imports no YAML
parser when the routes file has not changed since it was last read (see :func:`routes_config`).

The routes file matters to publish for two reasons only: its ``settings`` (``durability``,
``maxEventBytes``) and creating the cursor of a route seen for the first time (SPEC 3.4:
``start: latest`` then begins right before this event). Publishing never fails because of it.
Reading event files is :mod:`evroute.eventfile`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from evroute import tracing
from evroute.cloudevent import NESTED_TOO_DEEPLY, CloudEvent, check_size, is_json_type, make_event
from evroute.errors import EventTooLarge, EvrouteError, InvalidEvent, InvalidInput
from evroute.store.opener import Credentials, StoreURL, open_store
from evroute.store.records import RouteStart

if TYPE_CHECKING:
    from evroute.store.base import EventStore

DEFAULT_SOURCE = "/evroute/cli"
DEFAULT_BROKER = "default"
DEFAULT_MAX_EVENT_BYTES = 1_048_576  # as routes.model.Settings; not imported to keep start-up small
CHUNK = 2000  # events held before a file's transaction opens, then inserted per executemany

_BROKER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: `$` would pass a trailing newline
_EXT_NAME = re.compile(r"^[a-z0-9]{1,20}\Z")
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


def check_broker(name: str, flag: str = "--broker") -> str:
    if not _BROKER.match(name):
        raise InvalidInput(
            f"{flag} {name!r} is not a broker name (lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters)"
        )
    return name


# --------------------------------------------------------------------------- one event from options


def parse_extensions(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``--ext``; values stay strings (the CLI has no way to say more)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--ext {item!r} is not KEY=VALUE (e.g. --ext tenant=acme)")
        if not _EXT_NAME.match(key):
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
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    """The event ``evroute publish --type …`` describes; InvalidEvent names the option at fault."""
    if type is None:
        raise InvalidInput("--type is required (the event type, e.g. --type order.placed), or use --file")
    if data is not None and is_json_type(datacontenttype):
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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


# --------------------------------------------------------------------------- the routes file


# The two values below are NamedTuples, not the frozen dataclasses used elsewhere: a dataclass
# costs ~1 ms to create at import, a measurable share of a single `evroute publish`.


class RoutesConfig(NamedTuple):
    """What publish takes from the routes file; defaults when it is missing or invalid."""

    routes: tuple[tuple[str, str, str], ...] = ()  # (name, broker, start)
    durability: str = "normal"
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    warning: str | None = None  # one line, when the file could not be used
    cache_key: tuple[str, int, int, int] | None = None  # set when freshly loaded: remember it
    tracing_endpoint: str | None = None  # settings.tracing.endpoint

    def to_json(self) -> str:
        return json.dumps(
            {
                "routes": [list(r) for r in self.routes],
                "durability": self.durability,
                "maxEventBytes": self.max_event_bytes,
                "tracing": self.tracing_endpoint,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RoutesConfig:
        doc = json.loads(text)
        return cls(
            tuple((str(n), str(b), str(s)) for n, b, s in doc["routes"]),
            str(doc["durability"]),
            int(doc["maxEventBytes"]),
            tracing_endpoint=doc.get("tracing"),
        )


def routes_config(path: str, store: Any = None) -> RoutesConfig:
    """The routes file's settings and (name, broker, start) of every route, never raising.

    Parsing YAML costs more than the rest of a publish, so on SQLite the result is remembered
    in the database keyed by the file's (path, mtime, size, inode): editors that save by rename
    change the inode, in-place writes change the mtime. Only a file that loaded cleanly is
    remembered; an invalid one is read again each time, and each time gives the warning.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return RoutesConfig()  # no routes file: publishing works without one, silently
    except OSError as exc:
        return RoutesConfig(warning=f"routes file '{path}' cannot be read ({exc.strerror})")
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino)
    cached = getattr(store, "cached_routes", None)
    if cached is not None:
        found = cached(key)
        if found is not None:
            return RoutesConfig.from_json(found)
    return _load(path, key)


def _load(path: str, key: tuple[str, int, int, int]) -> RoutesConfig:
    from evroute.errors import RoutesInvalid
    from evroute.routes.load import load_routes

    try:
        routeset = load_routes(path, resolve=False)
    except RoutesInvalid as exc:
        n = len(exc.problems)
        return RoutesConfig(
            warning=f"routes file '{path}': {n} problem{'s' if n != 1 else ''} (see `evroute routes check`)"
        )
    except EvrouteError as exc:
        return RoutesConfig(warning=f"routes file '{path}': {exc.message.splitlines()[0]}")
    except Exception as exc:  # publish must not fail because of the routes file, whatever it holds
        return RoutesConfig(warning=f"routes file '{path}' could not be loaded ({type(exc).__name__}: {exc})")
    settings = routeset.settings
    return RoutesConfig(
        tuple((r.name, r.broker, r.start) for r in routeset.routes),
        settings.durability,
        settings.max_event_bytes,
        cache_key=key,
        tracing_endpoint=settings.tracing_endpoint,
    )


def _remember(store: Any, config: RoutesConfig) -> None:
    remember = getattr(store, "remember_routes", None)
    if config.cache_key is None or remember is None:
        return
    remember(config.cache_key, config.to_json(), time.time())


# --------------------------------------------------------------------------- storing


class Published(NamedTuple):
    stored: int
    duplicates: int
    seq: int | None = None  # a single event: its seq, or None when it was a duplicate
    warning: str | None = None  # about the routes file; the events were stored regardless


class _Target:
    """The store and routes config of one publish, opened in the order that keeps bad input
    from touching the store: an existing SQLite file is opened at once (the routes cache lives
    there), a new one is created only when there is something valid to store."""

    def __init__(self, where: str | StoreURL, routes: str, credentials: Credentials | None) -> None:
        self.url = where if isinstance(where, StoreURL) else StoreURL("sqlite", f"sqlite:{where}", path=where)
        self.credentials = credentials
        self.store: Any = None
        if self.url.kind != "sqlite" or os.path.exists(self.url.path):
            self.store = open_store(self.url, credentials=credentials)
        self.config = routes_config(routes, self.store)
        # Spans are exported only with an endpoint configured: nothing of OpenTelemetry loads otherwise.
        tracing.setup(self.config.tracing_endpoint, one_shot=True)

    def check_size(self, event: CloudEvent, where: str = "") -> None:
        try:
            check_size(event, self.config.max_event_bytes, where)
        except EventTooLarge as exc:
            raise EventTooLarge(f"{exc.message} (settings.maxEventBytes in the routes file)") from None

    def open(self) -> EventStore:
        """The store, created if need be, with the positions of new routes in place."""
        if self.store is None:
            self.store = open_store(self.url, durability=self.config.durability, credentials=self.credentials)
        elif self.config.durability != "normal" and hasattr(self.store, "set_durability"):
            self.store.set_durability(self.config.durability)
        # A store reports its own faults as StoreError (it names the file or the server).
        _remember(self.store, self.config)
        if self.config.routes:
            self.store.ensure_routes([RouteStart(*r) for r in self.config.routes])
        store: EventStore = self.store
        return store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def publish_event(
    where: str | StoreURL, routes: str, broker: str, event: CloudEvent, credentials: Credentials | None = None
) -> Published:
    """Store one event (built by :func:`event_from_options`); a duplicate is reported, not an error.
    ``where`` is a store URL, or the path of a SQLite file."""
    check_broker(broker)
    target = _Target(where, routes, credentials)
    try:
        target.check_size(event)
        event = tracing.ensure(event, broker)  # an event without a trace gets one
        result = target.open().append(broker, [event])
    finally:
        target.close()
    seq = result.seqs[0] if result.seqs else None
    return Published(result.stored, result.duplicates, seq, target.config.warning)


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
    events = read_events(stream, name, problems, target.check_size, progress)
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
    "parse_extensions",
    "publish_event",
    "publish_file",
    "read_data",
    "routes_config",
]
