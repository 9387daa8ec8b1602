"""A real ingress on a loopback port, served from its own thread and event loop, for tests
that talk to it synchronously (httpx, raw sockets)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from evroute.store import Store
from evroute.worker.ingress import make_app, start
from evroute.worker.metrics import Metrics


class IngressThread:
    """``with IngressThread(db) as srv: srv.url …``; ``woken`` lists every on_stored broker."""

    def __init__(
        self,
        db: Path | str,
        *,
        token: str | None = None,
        max_event_bytes: int = 1 << 20,
        loop: str = "asyncio",
        **options: Any,
    ) -> None:
        self.store = Store(str(db))
        self.metrics = Metrics()
        self.woken: list[str] = []
        self.app = make_app(
            store=self.store,
            max_event_bytes=max_event_bytes,
            token=token,
            metrics=self.metrics,
            on_stored=self.woken.append,
            **options,
        )
        if loop == "uvloop":  # the worker's own loop (evroute.eventloop)
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = self.loop.run_until_complete(start(self.app, "127.0.0.1", 0))
        self.port = int(self._runner.addresses[0][1])
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> IngressThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the ingress did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.store.close()

    def raw_half_closed(self, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Send ``request``, shut the sending side (as ``nc -N`` does), read until closed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        return int(answer.split(b" ", 2)[1]), answer

    def raw(self, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Send ``request`` as it is (any bytes) and return the status code and the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        answer = b"".join(chunks)
        if not answer.startswith(b"HTTP/1."):
            raise AssertionError(f"no HTTP answer: {answer[:200]!r}")
        return int(answer.split(b" ", 2)[1]), answer
