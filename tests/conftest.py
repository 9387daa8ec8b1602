"""Shared test set-up: the helpers in this folder (``receiver``) import from any subfolder."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


# --- a real nats-server per test (the JetStream store's tests) -------------------------------

import pytest  # noqa: E402
from natsserver import NatsCluster, NatsServer  # noqa: E402


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory):
    """One nats-server with JetStream on a free loopback port and its own store directory."""
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store").start()
    yield server
    server.kill()


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three routed nats-servers with JetStream (streams may use replicas 3)."""
    cluster = NatsCluster(tmp_path_factory.mktemp("natscluster")).start()
    yield cluster
    for server in cluster.servers:
        server.kill()


class FakeClock:
    """An injectable clock for the engine and the runner: time moves only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def receivers():  # type: ignore[no-untyped-def]
    """Start loopback receivers (``receivers(behaviour)``); every one is stopped after the test."""
    from receiver import Receiver

    started: list[Receiver] = []

    def make(behaviour=None) -> Receiver:  # type: ignore[no-untyped-def]
        r = Receiver(behaviour).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
