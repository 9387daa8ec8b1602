"""The console's aiohttp application, mounted at ``/ui/`` (by ``evroute ui`` and by
``evroute worker --listen``).

Pages are rendered on the server (``pages.py``) from data read in threads (``data.py``);
each page then follows one server-sent-event stream that sends its live sections again,
re-rendered, whenever the database changed. One watcher per application notices changes
(``PRAGMA data_version`` on its own connection, as the worker does) and wakes every stream;
streams also refresh every few seconds for the deliveries/s charts. Changes go through the
same library calls as the CLI (``deadletters.replay``, ``routes.edit.set_paused``,
``cursors.reset``, ``publish.publish_event``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from evroute.console import pages
from evroute.console.auth import COOKIE, CSRF_HEADER, SAFE_METHODS, Gate
from evroute.console.data import RATE_EVERY, Reader
from evroute.errors import EvrouteError, InvalidInput, NotFound
from evroute.store.opener import Credentials, StoreURL

logger = logging.getLogger("evroute.console")

WATCH_EVERY = 0.05  # while commits keep coming, a data_version look this often (idle: woken by the WAL)
WATCH_EVERY_REMOTE = 0.25  # a look at a NATS server (the newest outcome) costs a round trip
# Pages load only the console's own files and cannot be framed by another site (clickjacking).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    def __init__(
        self, db: str | StoreURL, routes: str, gate: Gate, credentials: Credentials | None = None
    ) -> None:
        """``db``: the SQLite file, or a store URL (a NATS store is read through the seam)."""
        self.reader = Reader(db, routes, credentials)
        self.where = db
        self.credentials = credentials
        self.db = self.reader.db
        self.routes = routes
        self.gate = gate
        self.version = 0  # moves whenever the store changed
        self._tick = asyncio.Event()  # set (and replaced) when it moves
        self._watcher: asyncio.Task[None] | None = None
        self.closing = False  # the server is shutting down: open streams end at once

    # ------------------------------------------------------------------ live

    async def start(self, _app: web.Application) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="console-watch")

    async def closing_down(self, _app: web.Application) -> None:
        self.closing = True
        self._bump()

    async def stop(self, _app: web.Application) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await asyncio.to_thread(self.reader.close)

    def _bump(self) -> None:
        self.version += 1
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _watch(self) -> None:
        await asyncio.gather(
            self._sample_rates(), self._watch_remote() if self.reader.remote else self._watch_local()
        )

    async def _sample_rates(self) -> None:
        """Deliveries/s per route for the overview's sparklines, one sample every RATE_EVERY."""
        failing = False
        while True:
            try:
                await asyncio.to_thread(self.reader.sample_rates)
                failing = False
            except Exception as exc:  # supervised: said once, survived
                if not failing:
                    failing = True
                    logger.warning("console: cannot sample delivery rates: %s", exc)
            await asyncio.sleep(RATE_EVERY)

    async def _watch_local(self) -> None:
        """A SQLite file: woken by its WAL file's changes (another process committed), as the
        worker is; pages learn of a commit within ``WATCH_EVERY`` while commits keep coming."""
        from evroute.store import Store
        from evroute.store.wakeups import watch_commits

        failing = False
        while True:
            store: Store | None = None
            try:
                store = Store(self.db, create=False)
                if failing:
                    failing = False
                    logger.info("console: watching the database again")
                await watch_commits(self.db, store.data_version, self._bump, poll=WATCH_EVERY)
            except Exception as exc:  # supervised: said once, backed off, survived
                if not failing:
                    failing = True
                    logger.warning("console: cannot watch the database (retrying every second): %s", exc)
            finally:
                if store is not None:
                    store.close()
            await asyncio.sleep(1.0)

    async def _watch_remote(self) -> None:
        """A NATS store: the newest recent outcome moves whenever a worker delivered."""
        seen = -1
        failing = False
        while True:
            try:
                current = await asyncio.to_thread(lambda: int(self.reader.seam().changed()))
                if current != seen:
                    seen = current
                    self._bump()
                if failing:
                    failing = False
                    logger.info("console: watching the store again")
            except Exception as exc:  # supervised: said once, backed off, survived
                if not failing:
                    failing = True
                    logger.warning("console: cannot watch the store (retrying every second): %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(WATCH_EVERY_REMOTE)

    async def _next_change(self, version: int, timeout: float) -> int:
        """The version once it moved past ``version`` (or the console is closing), or after ``timeout``."""
        if self.version == version and not self.closing:
            try:
                await asyncio.wait_for(self._tick.wait(), timeout)
            except TimeoutError:
                pass
        return self.version

    async def stream(self, request: web.Request) -> web.StreamResponse:
        view = request.query.get("view", "")
        render = self._sections(view, dict(request.query))
        if render is None:
            raise web.HTTPNotFound(text="unknown view")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        last = ""
        version = -1
        while not self.closing:
            try:
                sections = await asyncio.to_thread(render)
            except EvrouteError as exc:
                sections = {"error": pages.e(exc.message)}
            text = json.dumps(sections)
            if text != last:
                last = text
                await response.write(f"data: {text}\n\n".encode())
            else:
                await response.write(b": still here\n\n")
            version = await self._next_change(version, RATE_EVERY)
        return response

    def _sections(self, view: str, query: dict[str, str]) -> Callable[[], dict[str, str]] | None:
        reader = self.reader
        if view == "overview":
            return lambda: pages.overview_sections(reader.overview())
        if view == "events":
            return lambda: {"events-body": pages.event_rows(reader.events(query)["rows"])}
        if view == "event":
            key = query.get("key", "")
            return lambda: {"event-routes": pages.event_routes(reader.event(key))}
        if view == "route":
            name = query.get("name", "")

            def route_state() -> dict[str, str]:
                doc = reader.route(name)
                return {"route-state": pages.route_state(doc["status"]) if doc else "not in the routes file"}

            return route_state
        if view == "dead-letters":
            return lambda: {
                "dead-body": pages.dead_letter_rows(
                    reader.dead_letters(query.get("route"), query.get("reason"))
                )
            }
        return None

    # ------------------------------------------------------------------ pages

    def _page(
        self, request: web.Request, title: str, body: str, active: str, stream: str | None
    ) -> web.Response:
        cookie = request.cookies.get(COOKIE, "")
        html = pages.page(title, body, csrf=self.gate.csrf_for(cookie), active=active, stream=stream)
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def overview(self, request: web.Request) -> web.StreamResponse:
        doc = await asyncio.to_thread(self.reader.overview)
        return self._page(request, "Overview", pages.overview(doc), "/ui/", "/ui/api/stream?view=overview")

    async def events(self, request: web.Request) -> web.StreamResponse:
        filters = {
            k: v
            for k, v in request.query.items()
            if k in ("q", "broker", "type", "source", "route", "outcome")
        }
        doc = await asyncio.to_thread(self.reader.events, filters)
        names = [r.name for r in self.reader.routeset().routes]
        stream = "/ui/api/stream?" + "&".join(
            f"{k}={quote(v)}" for k, v in {"view": "events", **filters}.items()
        )
        return self._page(request, "Events", pages.events(filters, doc, names), "/ui/events", stream)

    async def event(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        try:
            doc = await asyncio.to_thread(self.reader.event, key)
        except NotFound as exc:
            raise web.HTTPNotFound(text=exc.message) from None
        title = f"Event {doc['event'].get('id')}"
        return self._page(
            request, title, pages.event(doc), "/ui/events", f"/ui/api/stream?view=event&key={quote(key)}"
        )

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        filters = {k: v for k, v in request.query.items() if k in ("route", "reason") and v}
        letters = await asyncio.to_thread(
            self.reader.dead_letters, filters.get("route"), filters.get("reason")
        )
        names = [r.name for r in self.reader.routeset().routes]
        stream = "/ui/api/stream?" + "&".join(
            f"{k}={quote(v)}" for k, v in {"view": "dead-letters", **filters}.items()
        )
        return self._page(
            request, "Dead letters", pages.dead_letters(filters, letters, names), "/ui/dead-letters", stream
        )

    async def route(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        doc = await asyncio.to_thread(self.reader.route, name)
        if doc is None:
            raise web.HTTPNotFound(text=f"route '{name}' is not in the routes file")
        return self._page(
            request,
            f"Route {name}",
            pages.route(doc),
            "/ui/",
            f"/ui/api/stream?view=route&name={quote(name)}",
        )

    async def send(self, request: web.Request) -> web.StreamResponse:
        chosen = request.query.get("from") or None
        doc = await asyncio.to_thread(self.reader.send_defaults, chosen)
        return self._page(request, "Send an event", pages.send(doc, chosen), "/ui/send", None)

    # ------------------------------------------------------------------ changes

    async def act(self, request: web.Request) -> web.StreamResponse:
        from evroute.console import actions

        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the request body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the request body must be a JSON object"}, status=400)
        what = request.match_info["what"]
        try:
            result = await asyncio.to_thread(actions.run, self, what, body)
        except NotFound as exc:
            return web.json_response({"error": exc.message}, status=404)
        except InvalidInput as exc:
            return web.json_response({"error": exc.message}, status=400)
        except EvrouteError as exc:
            return web.json_response({"error": exc.message}, status=500 if exc.exit_code == 1 else 400)
        return web.json_response(result)

    # ------------------------------------------------------------------ sign in

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:  # the link `evroute ui` prints: sign in, then drop the token from the URL
            if not self.gate.token_ok(token):
                return self._login_page("That token is not right.", "/ui/", 401)
            return self._signed_in("/ui/")
        return self._login_page(None, request.query.get("next", "/ui/"), 200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        nxt = _local_path(str(form.get("next", "/ui/")))
        if not self.gate.token_ok(str(form.get("token", ""))):
            return self._login_page("That token is not right.", nxt, 401)
        return self._signed_in(nxt)

    def _login_page(self, error: str | None, nxt: str, status: int) -> web.Response:
        return web.Response(
            text=pages.login(error, _local_path(nxt)),
            content_type="text/html",
            status=status,
            headers=PAGE_HEADERS,
        )

    def _signed_in(self, nxt: str) -> web.StreamResponse:
        response = web.HTTPSeeOther(nxt)
        response.set_cookie(COOKIE, self.gate.new_session(), httponly=True, samesite="Strict", path="/ui")
        return response


def _local_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui"):
        return "/ui/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _guard(console: Console) -> Any:
    gate = console.gate

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path == "/ui" or path.startswith("/ui/")):
            return await handler(request)  # the worker's ingress shares the application
        if path.startswith("/ui/static/") or path == "/ui/login":
            return await handler(request)
        if gate.bearer_ok(request.headers.get("Authorization")):
            return await handler(request)  # a script with the token: no cookie, no CSRF needed
        cookie = request.cookies.get(COOKIE)
        if not gate.session_ok(cookie):
            if request.method in SAFE_METHODS and not path.startswith("/ui/api/"):
                raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs)}")
            return web.json_response(
                {"error": "sign in first (or send Authorization: Bearer <token>)"}, status=401
            )
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return web.json_response({"error": "cross-origin request refused"}, status=403)
            given = request.headers.get(CSRF_HEADER)
            if not gate.csrf_ok(str(cookie), given):
                return web.json_response(
                    {"error": "missing or wrong CSRF token; reload the page"}, status=403
                )
        return await handler(request)

    return guard


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound()
    try:
        body = resources.files("evroute.console").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    return web.Response(
        body=body, content_type=STATIC_TYPES[suffix], headers={"Cache-Control": "max-age=300"}
    )


def add_console(
    app: web.Application,
    *,
    db: str | StoreURL,
    routes: str,
    gate: Gate,
    credentials: Credentials | None = None,
) -> Console:
    """Mount the console's pages on ``app`` under /ui/ (``db``: a SQLite file or a store URL)."""
    console = Console(db, routes, gate, credentials)
    app.middlewares.append(_guard(console))
    r = app.router
    r.add_get("/ui/static/{name}", _static)
    r.add_get("/ui/login", console.login_form)
    r.add_post("/ui/login", console.login)
    r.add_get("/ui/", console.overview)
    r.add_get("/ui", lambda _r: _redirect("/ui/"))
    r.add_get("/ui/events", console.events)
    r.add_get("/ui/events/{key}", console.event)
    r.add_get("/ui/dead-letters", console.dead_letters)
    r.add_get("/ui/routes/{name}", console.route)
    r.add_get("/ui/send", console.send)
    r.add_get("/ui/api/stream", console.stream)
    r.add_post("/ui/api/{what:.+}", console.act)
    app.on_startup.append(console.start)
    app.on_shutdown.append(console.closing_down)
    app.on_cleanup.append(console.stop)
    return console


async def _redirect(to: str) -> web.StreamResponse:
    raise web.HTTPFound(to)


__all__ = ["Console", "add_console"]
