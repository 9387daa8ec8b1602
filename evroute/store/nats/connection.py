"""Connecting to NATS: the store URL, credentials, and one clear line when nobody answers.

``nats://host:port[,host:port…]`` (or ``tls://…``) names a cluster; ``--nats-creds`` /
``$NATS_CREDS`` and ``--nats-token`` / ``$NATS_TOKEN`` authenticate. Commands connect once and
fail fast (:class:`StoreError` naming the address, within the connect timeout); workers and the
ingress keep reconnecting with nats-py's backoff and say so in one log line per change.

The seam's command half is synchronous: :class:`LoopThread` runs the asyncio client on a
private event loop in a daemon thread, so a CLI command calls it like any function.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from evroute.errors import InvalidInput, StoreError

log = logging.getLogger("evroute.store.nats")
T = TypeVar("T")

_HOSTPORT = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?\Z")


@dataclass(frozen=True, slots=True)
class NatsOptions:
    servers: tuple[str, ...]
    creds: str | None = None
    token: str | None = None
    connect_timeout: float = 2.0

    @property
    def address(self) -> str:
        """What an error message names: the servers as given."""
        return ",".join(self.servers)


def parse_url(url: str, creds: str | None = None, token: str | None = None) -> NatsOptions:
    """``nats://a:4222,b:4222`` → one server URL per host (each keeps the scheme)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("nats", "tls"):
        raise InvalidInput(f"store URL {url!r}: expected nats://host:port[,host:port…] or tls://…")
    servers = []
    for part in rest.rstrip("/").split(","):
        part = part.strip()
        if part.startswith(("nats://", "tls://")):
            part = part.split("://", 1)[1]
        userinfo, at, hostport = part.rpartition("@")
        if not _HOSTPORT.match(hostport or ""):
            raise InvalidInput(f"store URL {url!r}: {part!r} is not host:port")
        if ":" not in hostport.rsplit("]", 1)[-1]:
            hostport += ":4222"
        servers.append(f"{scheme}://{userinfo}{at}{hostport}")
    return NatsOptions(
        servers=tuple(servers),
        creds=creds if creds is not None else os.environ.get("NATS_CREDS") or None,
        token=token if token is not None else os.environ.get("NATS_TOKEN") or None,
    )


async def connect(opts: NatsOptions, *, name: str = "evroute", keep_trying: bool = False) -> Any:
    """A connected nats-py client, or StoreError naming the address.

    ``keep_trying`` (workers, ingress): after the first connection, losing the server is not an
    error — the client reconnects forever with backoff and each change is one log line.
    """
    from nats.errors import NoServersError

    state: dict[str, Any] = {"lost": False, "nc": None}

    async def disconnected() -> None:
        nc = state["nc"]
        if nc is not None and nc.is_closed:
            return  # our own close, not a loss
        if not state["lost"]:
            state["lost"] = True
            log.warning("lost the connection to NATS at %s; reconnecting", opts.address)

    async def reconnected() -> None:
        state["lost"] = False
        log.warning("reconnected to NATS at %s", opts.address)

    async def error(exc: Exception) -> None:
        log.debug("NATS client: %s", exc)

    kwargs: dict[str, Any] = {
        "servers": list(opts.servers),
        "name": name,
        "connect_timeout": opts.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1 if keep_trying else 1,
        "reconnect_time_wait": 0.5,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
    }
    if opts.creds:
        kwargs["user_credentials"] = opts.creds
    if opts.token:
        kwargs["token"] = opts.token
    try:
        # The initial connection never loops: an unreachable address is an answer, not a wait.
        nc = await asyncio.wait_for(_first(kwargs), timeout=opts.connect_timeout * len(opts.servers) * 2 + 1)
        state["nc"] = nc
        return nc
    except (OSError, NoServersError, TimeoutError) as exc:
        why = "no server answered" if isinstance(exc, NoServersError) else reason(exc)
        raise StoreError(f"cannot reach NATS at {opts.address}: {why}")
    except Exception as exc:
        raise StoreError(f"cannot connect to NATS at {opts.address}: {reason(exc)}")


async def _first(kwargs: dict[str, Any]) -> Any:
    import nats

    keep = kwargs["max_reconnect_attempts"] < 0
    # Each server of the list is tried (twice at most), so one node down does not fail a command.
    first = dict(kwargs, allow_reconnect=True, max_reconnect_attempts=1)
    nc = await nats.connect(**first)
    if keep:
        # nats-py fixes the reconnect policy at connect time: switch it on for the long run now.
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
    return nc


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) or not text:
        return "no answer within the connect timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    return text


class LoopThread:
    """A private event loop in a daemon thread: synchronous callers run coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="evroute-nats", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
