"""The contract every store fills, run once per store.

A test here talks to a store only through the seam (:mod:`evroute.store.base`), the CLI with
``--store URL``, or a worker; the ``store`` fixture gives it a fresh, empty store of each kind
in ``STORES``. A store kind adds itself by adding one :class:`StoreCase` subclass to ``STORES``.

(A package, so that its ``conftest.py``, which only registers these fixtures, is
``contract.conftest`` and never shadows the ``conftest`` other test modules import by name.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evroute.cli import main
from evroute.cloudevent import CloudEvent, make_event
from evroute.routes.load import load_routes_text
from evroute.routes.model import RouteSet
from evroute.store.base import EventStore, starts
from evroute.store.opener import open_store, parse

from receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


class StoreCase:
    """One store under test: its URL, and how to open it, publish to it and run a worker on it."""

    name = "?"

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.routes_path = tmp_path / "routes.yaml"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever the store case started (a server)."""

    def open(self) -> EventStore:
        return open_store(parse(self.url))

    def routes(self, text: str) -> RouteSet:
        """Write the routes file and return it loaded, with every route's position in place."""
        self.routes_path.write_text(textwrap.dedent(text))
        routeset = load_routes_text(self.routes_path.read_text(), str(self.routes_path))
        with self.store() as store:
            store.ensure_routes(starts(routeset.routes))
        return routeset

    def store(self) -> Any:
        """The store opened, as a context manager that closes it."""
        return _Closing(self.open())

    def publish(
        self, n: int, type: str = "order.placed", broker: str = "default", start: int = 0, **kw: Any
    ) -> list[str]:
        events = [
            make_event(
                type=type,
                source="/shop",
                id=f"{type}-{i}",
                data=json.dumps({"order": i}).encode(),
                datacontenttype="application/json",
                **kw,
            )
            for i in range(start, start + n)
        ]
        self.append(broker, events)
        return [e.id for e in events]

    def append(self, broker: str, events: list[CloudEvent]) -> None:
        with self.store() as store:
            for i in range(0, len(events), 100):
                store.append(broker, events[i : i + 100])

    def drain(self, routeset: RouteSet, drain: bool = True, timeout: float = 60.0) -> None:
        """Run the delivery engine in this process on a store of its own until nothing is left
        (``--drain``) or nothing is due (``--once``), as ``evroute worker`` does."""
        from evroute.worker.engine import Engine

        async def run() -> None:
            store = self.open()
            engine = Engine(store, routeset, once=not drain)
            await engine.start()
            try:
                await engine.run_until_idle(drain)
            finally:
                await engine.stop()
                await engine.deliveries.close()
                store.close()

        asyncio.run(asyncio.wait_for(run(), timeout))

    def cli(self, *args: str) -> tuple[int, str, str]:
        """``evroute --store URL --routes FILE ARGS`` through the real entry point."""
        runner = CliRunner()
        argv = ["--store", self.url, "--routes", str(self.routes_path), *args]
        with runner.isolation() as (out, err, _):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, out.getvalue().decode(), err.getvalue().decode()

    def process(self, *args: str) -> subprocess.Popen[bytes]:
        """``evroute --store URL --routes FILE ARGS`` as a real process."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [
            sys.executable,
            "-m",
            "evroute",
            "--store",
            self.url,
            "--routes",
            str(self.routes_path),
            *args,
        ]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir)


class _Closing:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


class SqliteCase(StoreCase):
    name = "sqlite"

    @property
    def url(self) -> str:
        return f"sqlite://{self.dir / 'ev.db'}"


STORES: dict[str, type[StoreCase]] = {"sqlite": SqliteCase}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    case = STORES[request.param](tmp_path)
    try:
        yield case
    finally:
        case.close()


@pytest.fixture
def receivers() -> Iterator[Any]:
    started: list[Receiver] = []

    def make(behaviour: Any = None) -> Receiver:
        r = Receiver(behaviour).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
