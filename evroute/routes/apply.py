"""``evroute routes apply [FILE]``: make a routes file the one the store's workers run.

On a NATS store the routes live in KV bucket ``EVROUTE_ROUTES`` (one source of truth for the
cluster); on SQLite they are the routes file itself. Either way the upload is checked first
(every problem listed, as ``routes check`` lists them; nothing written), written with a
compare-and-set on the revision that was read (a concurrent edit is refused, never lost), and
every new route gets its position at once, so "apply, publish, start the workers" delivers
with ``start: latest``.

``${VAR}`` references are checked for form here and expanded on each worker from its own
environment: the machine that applies the routes need not hold the secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evroute.errors import InvalidInput, RoutesInvalid


@dataclass(frozen=True, slots=True)
class Applied:
    revision: int
    routes: tuple[str, ...]
    created: tuple[str, ...]
    unchanged: bool


def read_text(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InvalidInput(f"routes file {path} not found") from None
    except OSError as exc:
        raise InvalidInput(f"routes file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RoutesInvalid([f"{path}:{line}:1: the file is not UTF-8 text (save it as UTF-8)"]) from None


def apply_routes(store: Any, text: str, source: str, target: str) -> Applied:
    """Check ``text`` (named ``source`` in messages) and make it the routes at ``target``."""
    from evroute.routes.load import AnyVariable, load_routes_text
    from evroute.store.base import starts

    routeset = load_routes_text(text, source, AnyVariable())  # RoutesInvalid: nothing written
    current = store.routes(target)
    names = tuple(r.name for r in routeset.routes)
    if current is not None and current.text == text:
        revision, unchanged = current.revision, True
    else:
        revision = store.put_routes(target, text, current.revision if current is not None else None)
        unchanged = False
    store.use_routes(routeset.routes, routeset.settings)
    created = tuple(store.ensure_routes(starts(routeset.routes)))
    return Applied(revision, names, created, unchanged)
