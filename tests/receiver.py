"""A real loopback HTTP subscriber for tests: an aiohttp server on its own thread that
records every request and answers as the test tells it to."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def ce_id(self) -> str:
        return self.headers.get("ce-id", "")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Behaviour = Callable[[Request], Reply]


class Receiver:
    """``Receiver().start()``; ``url``; ``requests``; ``behaviour`` decides each answer."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour: Behaviour = behaviour or (lambda _r: Reply())
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("receiver did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            rec = Request(request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.time())
            with self.lock:
                self.requests.append(rec)
            reply = self.behaviour(rec)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

        async def setup() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

        loop.run_until_complete(setup())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.ce_id for r in self.requests]

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if predicate(list(self.requests)):
                    return
            time.sleep(0.01)
        with self.lock:
            count = len(self.requests)
        raise AssertionError(f"condition not met within {timeout}s ({count} requests seen)")
