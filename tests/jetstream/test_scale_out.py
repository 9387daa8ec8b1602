"""What only a cluster store has, against real nats-servers and real worker processes: several
workers share every route, kill -9 of a worker or of the server loses nothing acknowledged,
ordered routes stay ordered across workers, a three-node cluster survives losing a node, and a
plain NATS client can publish a CloudEvent that reaches the routes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from evroute.cloudevent import make_event
from evroute.store.base import starts
from evroute.store.nats.store import parse_routes
from evroute.store.opener import open_store, parse

from receiver import Receiver, Reply

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def routes_text(receiver: Receiver, ordered: bool = False, replicas: int = 1) -> str:
    return f"""\
settings:
  nats: {{replicas: {replicas}}}
routes:
  - name: orders
    subscriber: {receiver.url}/orders
    headers: {{x-worker: "${{WORKER_NAME}}"}}
    start: earliest
    delivery:
      timeout: PT1S
      backoffDelay: 50ms
      ordering: {"ordered" if ordered else "unordered"}
      concurrency: 16
"""


def setup(url: str, text: str):  # type: ignore[no-untyped-def]
    store = open_store(parse(url))
    store.put_routes("routes.yaml", text, None)
    store.ensure_routes(starts(parse_routes(text).routes))
    return store


def publish(store, n: int, start: int = 0) -> list[str]:  # type: ignore[no-untyped-def]
    ids = [f"o{i}" for i in range(start, start + n)]
    for i in range(0, n, 200):
        chunk = [make_event(type="order.placed", source="/shop", id=x, data=b"{}") for x in ids[i : i + 200]]
        store.append("default", chunk)
    return ids


def worker(url: str, name: str) -> subprocess.Popen[bytes]:
    """``evroute --store URL worker`` as a real process; its routes come from the store."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "WORKER_NAME": name,
    }
    log = open(os.environ.get("EVROUTE_TEST_WORKER_LOG", os.devnull), "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "evroute", "--store", url, "worker", "-v"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    finally:
        log.close()


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def wait_workers(store, n: int) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: len(store.workers(time.time())) >= n, timeout=30)


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    r = Receiver().start()
    yield r
    r.stop()


def test_three_workers_share_a_route_and_each_delivers_some(nats_server, receiver):
    store = setup(nats_server.url, routes_text(receiver))
    procs = [worker(nats_server.url, f"w{i}") for i in range(3)]
    try:
        wait_workers(store, 3)  # every worker pulling before the events arrive
        ids = publish(store, 600)
        receiver.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids), timeout=30)
    finally:
        stop(*procs)
        store.close()
    by_worker = Counter(r.headers["x-worker"] for r in receiver.requests)
    assert set(by_worker) == {"w0", "w1", "w2"}, by_worker
    assert {r.ce_id for r in receiver.requests} == set(ids)


def test_kill_9_of_a_worker_during_2000_events_loses_nothing(nats_server, receiver):
    store = setup(nats_server.url, routes_text(receiver))
    ids = publish(store, 2000)
    victim, survivor = worker(nats_server.url, "victim"), worker(nats_server.url, "survivor")
    try:
        receiver.wait_for(
            lambda reqs: sum(r.headers["x-worker"] == "victim" for r in reqs) >= 200, timeout=30
        )
        os.kill(victim.pid, signal.SIGKILL)
        receiver.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids), timeout=60)
        # what the victim held is redelivered after AckWait, and then everything is acked
        wait_until(lambda: store.cursor("orders").position == 2000, timeout=30)
    finally:
        stop(victim, survivor)
        store.close()
    assert {r.ce_id for r in receiver.requests} == set(ids)


def test_an_ordered_route_stays_ordered_across_two_workers_with_failures(nats_server):
    seen: list[str] = []
    calls = Counter[str]()

    def behaviour(req):  # type: ignore[no-untyped-def]
        calls[req.ce_id] += 1
        n = int(req.ce_id[1:])
        if n % 7 == 3 and calls[req.ce_id] == 1:
            return Reply(status=503, headers={"x-ok": "no"})
        seen.append(req.ce_id)
        return Reply()

    receiver = Receiver(behaviour).start()
    store = setup(nats_server.url, routes_text(receiver, ordered=True))
    procs = [worker(nats_server.url, "a"), worker(nats_server.url, "b")]
    try:
        wait_workers(store, 2)
        ids = publish(store, 80)
        receiver.wait_for(lambda reqs: len(seen) >= 80, timeout=60)
    finally:
        stop(*procs)
        store.close()
        receiver.stop()
    assert seen == ids  # each once, in publish order, failures retried in place
    assert {r.headers["x-worker"] for r in receiver.requests} == {"a", "b"}
    assert sum(1 for c in calls.values() if c == 2) == len([i for i in range(80) if i % 7 == 3])


def test_kill_9_of_the_server_and_restart_loses_nothing_acknowledged(nats_server, receiver):
    store = setup(nats_server.url, routes_text(receiver))
    ids = publish(store, 1000)  # every one acknowledged (PubAck)
    proc = worker(nats_server.url, "w")
    try:
        receiver.wait_for(lambda reqs: len(reqs) >= 100, timeout=30)
        store.close()
        nats_server.kill()
        nats_server.start()
        store = open_store(parse(nats_server.url))
        ids += publish(store, 100, start=1000)
        receiver.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids), timeout=60)
    finally:
        stop(proc)
        store.close()
    assert {r.ce_id for r in receiver.requests} == set(ids)


@pytest.mark.cluster
def test_a_three_node_cluster_with_replicas_3_survives_losing_a_node(nats_cluster, receiver):
    store = _cluster_setup(nats_cluster.url, routes_text(receiver, replicas=3))
    info = store._run(lambda js: js.stream_info("EVROUTE_DEFAULT"))
    assert info.config.num_replicas == 3
    proc = worker(nats_cluster.url, "w")
    try:
        ids = publish(store, 300)
        receiver.wait_for(lambda reqs: len(reqs) >= 50, timeout=30)
        nats_cluster.servers[0].kill()
        store.close()
        store = open_store(parse(",".join(s.url for s in nats_cluster.servers[1:])))
        ids += _retrying(lambda: publish(store, 300, start=300))
        receiver.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids), timeout=60)
    finally:
        stop(proc)
        store.close()
    assert {r.ce_id for r in receiver.requests} == set(ids)


def _retrying(fn, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """A cluster elects new stream leaders after a node dies: publishes fail for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _cluster_setup(url: str, text: str):  # type: ignore[no-untyped-def]
    # JetStream needs a meta leader before the first stream: wait for the cluster to form
    return _retrying(lambda: setup(url, text), timeout=30)


def test_a_plain_nats_client_publishing_a_structured_cloudevent_reaches_the_routes(nats_server, receiver):
    import nats

    store = setup(nats_server.url, routes_text(receiver))
    store.append("default", [make_event(type="warm", source="/w", id="w0")])  # the stream exists

    async def produce() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        body = {
            "specversion": "1.0",
            "id": "interop-1",
            "source": "/other-sdk",
            "type": "order.placed",
            "datacontenttype": "application/json",
            "data": {"order": 42},
        }
        await js.publish(
            "evroute.default",
            json.dumps(body).encode(),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        await nc.close()

    asyncio.run(produce())
    proc = worker(nats_server.url, "w")
    try:
        receiver.wait_for(lambda reqs: "interop-1" in {r.ce_id for r in reqs}, timeout=30)
    finally:
        stop(proc)
    [req] = [r for r in receiver.requests if r.ce_id == "interop-1"]
    assert json.loads(req.body) == {"order": 42}
    [stored] = store.find("interop-1")
    assert stored.event.source == "/other-sdk" and stored.event.data == b'{"order":42}'
    store.close()


def test_every_worker_applies_a_new_revision_of_the_routes_in_kv(nats_server, receiver, tmp_path):
    from evroute.routes.apply import apply_routes

    audit = Receiver().start()
    store = setup(nats_server.url, routes_text(receiver))
    procs = [worker(nats_server.url, "a"), worker(nats_server.url, "b")]
    try:
        wait_workers(store, 2)
        more = routes_text(receiver) + (
            f"  - name: audit\n    subscriber: {audit.url}/audit\n"
            '    headers: {x-worker: "${WORKER_NAME}"}\n'
        )
        t0 = time.monotonic()
        apply_routes(store, more, "routes.yaml", "routes.yaml")
        # published right after the apply: `start: latest` counts from the apply itself; in
        # waves until both workers have delivered some (each reloaded the new revision)
        ids: list[str] = []
        while {r.headers["x-worker"] for r in audit.requests} != {"a", "b"}:
            assert time.monotonic() - t0 < 15, "a worker did not pick up the new routes"
            ids += publish(store, 50, start=len(ids))
            want = set(ids)
            audit.wait_for(lambda reqs, want=want: {r.ce_id for r in reqs} >= want, timeout=30)
        took = time.monotonic() - t0
    finally:
        stop(*procs)
        store.close()
        audit.stop()
    assert {r.headers["x-worker"] for r in audit.requests} == {"a", "b"}  # both reloaded
    assert took < 10, took
