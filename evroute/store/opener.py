"""Which store a command talks to: ``--store URL`` / ``--db PATH`` / the environment, and
opening it.

``sqlite:///abs/path.db`` and ``sqlite:relative.db`` name a file; ``nats://host:port[,…]``
and ``tls://…`` a NATS cluster. The NATS client is imported only when a NATS URL is opened,
so a plain ``evroute publish`` never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from evroute.errors import InvalidInput

if TYPE_CHECKING:
    from evroute.store.base import EventStore

DEFAULT_DB = "evroute.db"
NATS_SCHEMES = ("nats", "tls")
_FORMS = "sqlite:PATH, sqlite:///ABSOLUTE/PATH or nats://HOST:PORT"


class StoreURL:
    """A parsed store URL. (Plain classes, not dataclasses: this module is on every command's
    start-up path, and a dataclass costs about a millisecond to define.)"""

    __slots__ = ("path", "scheme", "servers", "url")

    def __init__(self, scheme: str, url: str, path: str = "", servers: tuple[str, ...] = ()) -> None:
        self.scheme = scheme  # "sqlite" | "nats" | "tls"
        self.url = url  # as given (or sqlite:PATH for --db / $EVROUTE_DB)
        self.path = path  # the SQLite file
        self.servers = servers  # NATS host:port list, in the URL's order

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreURL) and (self.scheme, self.url, self.path, self.servers) == (
            other.scheme,
            other.url,
            other.path,
            other.servers,
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.url, self.path, self.servers))

    def __repr__(self) -> str:
        return f"StoreURL({self.url!r})"

    @property
    def kind(self) -> str:
        return "sqlite" if self.scheme == "sqlite" else "nats"


class Credentials:
    """NATS authentication: a creds file (``--nats-creds`` / ``$NATS_CREDS``) or a token."""

    __slots__ = ("creds", "token")

    def __init__(self, creds: str | None = None, token: str | None = None) -> None:
        self.creds = creds
        self.token = token

    def __repr__(self) -> str:
        return f"Credentials(creds={self.creds!r}, token={'***' if self.token else None})"


def parse(url: str) -> StoreURL:
    """A store URL, or InvalidInput naming the forms that are understood."""
    text = url.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise InvalidInput(f"unknown store '{url}' (use {_FORMS})")
    if scheme == "sqlite":
        if rest.startswith("///"):
            path = "/" + rest[3:].lstrip("/")
        elif rest.startswith("//"):
            raise InvalidInput(
                f"bad store URL '{url}': sqlite:///ABSOLUTE/PATH has three slashes, sqlite:PATH names a relative file"
            )
        else:
            path = rest
        if path in ("", "/"):
            raise InvalidInput(f"bad store URL '{url}': no database file named")
        return StoreURL("sqlite", text, path=path)
    if scheme in NATS_SCHEMES:
        if not rest.startswith("//") or not rest[2:].strip("/ "):
            raise InvalidInput(f"bad store URL '{url}' (use {scheme}://HOST:PORT[,HOST:PORT…])")
        servers = tuple(s.strip() for s in rest[2:].rstrip("/").split(",") if s.strip())
        return StoreURL(scheme, text, servers=servers)
    raise InvalidInput(f"unknown store scheme '{scheme}:' in '{url}' (use {_FORMS})")


def choose(store: str | None, db: str | None, env: Mapping[str, str]) -> StoreURL:
    """SPEC precedence: a flag beats the environment; ``--store`` with ``--db`` is a usage error."""
    if store is not None and db is not None:
        raise InvalidInput("--store and --db name the same thing: give one of them")
    if store is not None:
        return parse(store)
    if db is not None:
        return _file(db)
    if env.get("EVROUTE_STORE"):
        return parse(env["EVROUTE_STORE"])
    return _file(env.get("EVROUTE_DB") or DEFAULT_DB)


def _file(path: str) -> StoreURL:
    if not path:
        raise InvalidInput("--db needs a file path")
    return StoreURL("sqlite", f"sqlite:{path}", path=path)


def refuse_nats(url: StoreURL) -> None:
    """Raised where a command needs the SQLite file itself and the store is a NATS cluster."""
    if url.kind == "nats":
        raise InvalidInput(f"this command needs a SQLite store, and '{url.url}' is a NATS store")


def open_store(
    url: StoreURL,
    *,
    create: bool = True,
    durability: str = "normal",
    credentials: Credentials | None = None,
) -> EventStore:
    """Open the store ``url`` names (NATS code is imported here, and only for NATS URLs)."""
    if url.kind == "sqlite":
        from evroute.store.sqlite import SqliteStore

        return SqliteStore(url.path, create=create, durability=durability)
    try:
        from evroute.store import nats as nats_store  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        raise InvalidInput(
            f"store '{url.url}': the NATS JetStream store is not available in this build of evroute "
            "(use sqlite:PATH)"
        ) from None
    opened: EventStore = nats_store.open_store(url, credentials=credentials or Credentials())
    return opened


__all__ = ["DEFAULT_DB", "Credentials", "StoreURL", "choose", "open_store", "parse", "refuse_nats"]
