"""What a publish takes from the routes file, and the cache of it in the database.

The routes file matters to publish for two reasons only: its ``settings`` (``durability``,
``maxEventBytes``, the tracing endpoint) and creating the cursor of a route seen for the first
time (SPEC 3.4: ``start: latest`` then begins right before this event). Publishing never fails
because of it. Parsing YAML costs more than the rest of a publish, so on SQLite what it gives is
remembered in the database as a short text (read back without ``json``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from evroute.errors import EvrouteError

DEFAULT_MAX_EVENT_BYTES = 1_048_576  # as routes.model.Settings; not imported to keep start-up small

# A plain class, not a frozen dataclass nor a NamedTuple: defining a dataclass costs most of a
# millisecond, a NamedTuple ~70 µs, a plain class ~5 µs, and a single `evroute publish` pays for
# each one at import.


class RoutesConfig:
    """What publish takes from the routes file; defaults when it is missing or invalid."""

    __slots__ = ("cache_key", "durability", "max_event_bytes", "routes", "tracing_endpoint", "warning")

    def __init__(
        self,
        routes: tuple[tuple[str, str, str], ...] = (),  # (name, broker, start)
        durability: str = "normal",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        warning: str | None = None,  # one line, when the file could not be used
        cache_key: tuple[str, int, int, int] | None = None,  # set when freshly loaded: remember it
        tracing_endpoint: str | None = None,  # settings.tracing.endpoint
    ) -> None:
        self.routes = routes
        self.durability = durability
        self.max_event_bytes = max_event_bytes
        self.warning = warning
        self.cache_key = cache_key
        self.tracing_endpoint = tracing_endpoint

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoutesConfig) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "RoutesConfig(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    def to_text(self) -> str:
        """The form kept in the database's routes cache (read back without ``json``: one
        field per tab, one route per line, ``\\``, tab and line breaks escaped)."""
        tracing_field = "-" if self.tracing_endpoint is None else "+" + _escape(self.tracing_endpoint)
        lines = [_CACHE_FORMAT, f"{_escape(self.durability)}\t{self.max_event_bytes}\t{tracing_field}"]
        lines += ["\t".join(_escape(field) for field in route) for route in self.routes]
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> RoutesConfig | None:
        """What :meth:`to_text` wrote; None for anything else (an entry an earlier version kept)."""
        lines = text.split("\n")
        if lines[0] != _CACHE_FORMAT or len(lines) < 2:
            return None
        try:
            durability, max_bytes, tracing_field = lines[1].split("\t")
            routes = []
            for line in lines[2:]:
                name, broker, start = [_unescape(field) for field in line.split("\t")]
                routes.append((name, broker, start))
            return cls(
                tuple(routes),
                _unescape(durability),
                int(max_bytes),
                tracing_endpoint=None if tracing_field == "-" else _unescape(tracing_field[1:]),
            )
        except (ValueError, KeyError):  # not written by to_text: read the file again
            return None


_CACHE_FORMAT = "evroute routes cache 2"
_KEY_TAG = "2:"  # before the path in the cache key (see routes_config)
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _escape(text: str) -> str:
    if "\\" not in text and "\t" not in text and "\n" not in text and "\r" not in text:
        return text
    return "".join(_ESCAPES.get(c, c) for c in text)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for c in chars:
        out.append(_UNESCAPES[next(chars, "")] if c == "\\" else c)  # KeyError: not written by _escape
    return "".join(out)


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
    # The format's tag in the key: an evroute that keeps the cache in another form (JSON before
    # version 2) finds no row of this one under its own key, and this one none of its.
    key = (_KEY_TAG + os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino)
    cached = getattr(store, "cached_routes", None)
    if cached is not None:
        found = cached(key)
        config = None if found is None else RoutesConfig.from_text(found)
        if config is not None:
            return config
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


def remember(store: Any, config: RoutesConfig) -> None:
    """Keep a freshly loaded config in the store's routes cache (SQLite only)."""
    remember = getattr(store, "remember_routes", None)
    if config.cache_key is None or remember is None:
        return
    remember(config.cache_key, config.to_text(), time.time())


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "RoutesConfig", "remember", "routes_config"]
