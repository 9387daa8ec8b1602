"""``evroute ui``: the console on its own, over the store, delivering nothing."""

from __future__ import annotations

import asyncio
import logging
import signal
import webbrowser

from aiohttp import web

from evroute.console.app import add_console
from evroute.console.auth import Gate
from evroute.store.opener import Credentials, StoreURL

logger = logging.getLogger("evroute.console")


def sign_in_url(host: str, port: int, gate: Gate) -> str:
    where = f"[{host}]" if ":" in host else host
    base = f"http://{where}:{port}/ui/"
    return f"{base}login?token={gate.token}" if gate.generated else base


async def serve(
    db: str | StoreURL,
    routes: str,
    host: str,
    port: int,
    token: str | None,
    open_browser: bool,
    credentials: Credentials | None = None,
) -> int:
    """``db``: the SQLite file, or a store URL (a NATS store is read through the store seam)."""
    from evroute.store.opener import open_store, parse
    from evroute.worker.ingress import start

    where = parse(f"sqlite:{db}") if isinstance(db, str) else db

    def check() -> None:
        """A missing database or a server that does not answer is one clear error, before binding."""
        store = open_store(where, create=False, credentials=credentials)
        try:
            store.last_outcome()
        finally:
            store.close()

    await asyncio.to_thread(check)
    gate = Gate(token)
    app = web.Application()
    add_console(app, db=db, routes=routes, gate=gate, credentials=credentials)
    app.router.add_get("/", lambda _r: _to_ui())
    app.router.add_get("/favicon.ico", lambda _r: _to_icon())
    runner = await start(app, host, port)
    url = sign_in_url(host, port, gate)
    print(f"evroute console on {url}", flush=True)
    if not gate.generated:
        print("sign in with the token (--token / $EVROUTE_TOKEN)", flush=True)
    if open_browser:
        webbrowser.open(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


async def _to_ui() -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def _to_icon() -> web.StreamResponse:
    raise web.HTTPFound("/ui/static/favicon.svg")


def run(
    db: str | StoreURL,
    routes: str,
    listen: str,
    token: str | None,
    open_browser: bool,
    credentials: Credentials | None = None,
) -> int:
    from evroute import eventloop
    from evroute.worker.ingress import parse_listen

    host, port = parse_listen(listen)
    return eventloop.run(serve(db, routes, host, port, token, open_browser, credentials))


__all__ = ["run", "serve", "sign_in_url"]
