"""Hot reload against a real worker process: edits, `subscribe add`, broken files, SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import evroute, evroute_argv, evroute_env

from evroute.cloudevent import make_event
from evroute.store import Store
from evroute.store import log as event_log

from receiver import Receiver


class Worker:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.log = tmp_path / "worker.log"
        self._err = self.log.open("wb")
        self.proc = evroute(tmp_path, "worker", stdout=subprocess.DEVNULL, stderr=self._err)
        self.wait_log("route")

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.text()}")
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not logged: {self.text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self._err.close()


def publish(tmp_path: Path, ids: list[str]) -> None:
    with Store(str(tmp_path / "ev.db")) as store:
        event_log.append(
            store, "default", [make_event(type="order.placed", source="/shop", id=i) for i in ids]
        )


@pytest.fixture
def sinks():  # type: ignore[no-untyped-def]
    a, b = Receiver().start(), Receiver().start()
    yield a, b
    a.stop()
    b.stop()


def routes_text(*entries: tuple[str, str]) -> str:
    lines = ["# routes for the reload test", "routes:"]
    for name, url in entries:
        lines += [f"  - name: {name}", "    filter: {type: order.placed}", f"    subscriber: {url}/"]
    return "\n".join(lines) + "\n"


def test_edit_adds_a_route_and_a_broken_edit_changes_nothing(tmp_path: Path, sinks) -> None:  # type: ignore[no-untyped-def]
    inventory, payment = sinks
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text(("inventory", inventory.url)))
    worker = Worker(tmp_path)
    try:
        publish(tmp_path, [f"a-{i}" for i in range(20)])
        inventory.wait_for(lambda reqs: len(reqs) >= 20)
        # An editor saves by writing a new file and renaming it over the old one.
        tmp = tmp_path / ".routes.yaml.swp"
        tmp.write_text(routes_text(("inventory", inventory.url), ("payment", payment.url)))
        os.replace(tmp, routes)
        worker.wait_log("routes reloaded")
        after = [f"b-{i}" for i in range(30)]
        publish(tmp_path, after)
        payment.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(after))
        inventory.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(after))
        assert not {r.ce_id for r in payment.requests} & {f"a-{i}" for i in range(20)}  # start: latest

        # A broken file mid-stream: reported with line numbers, the last good routes keep running.
        routes.write_text(
            routes_text(("inventory", inventory.url)) + "  - name: Bad Name\n    subscriber: nope\n"
        )
        worker.wait_log("rejected")
        assert "routes.yaml:" in worker.text()
        more = [f"c-{i}" for i in range(10)]
        publish(tmp_path, more)
        payment.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(more))

        # The next valid edit applies: payment removed, its cursor kept.
        routes.write_text(routes_text(("inventory", inventory.url)))
        worker.wait_log("route payment removed")
        publish(tmp_path, ["d-1"])
        inventory.wait_for(lambda reqs: "d-1" in {r.ce_id for r in reqs})
        time.sleep(0.3)
        assert "d-1" not in payment.ids()
        # Re-adding the name resumes from the kept cursor: d-1 arrives.
        routes.write_text(routes_text(("inventory", inventory.url), ("payment", payment.url)))
        payment.wait_for(lambda reqs: "d-1" in {r.ce_id for r in reqs})
    finally:
        worker.stop()
    assert worker.proc.returncode == 0


def test_subscribe_add_while_the_worker_runs(tmp_path: Path, sinks) -> None:  # type: ignore[no-untyped-def]
    inventory, notification = sinks
    (tmp_path / "routes.yaml").write_text(routes_text(("inventory", inventory.url)))
    worker = Worker(tmp_path)
    try:
        result = subprocess.run(
            evroute_argv(
                tmp_path, "subscribe", "add", "notification", "--sink", notification.url + "/",
                "--filter", "type=order.placed",
            ),
            env=evroute_env(),
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        worker.wait_log("route notification added")
        ids = [f"n-{i}" for i in range(25)]
        publish(tmp_path, ids)
        notification.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids))
        inventory.wait_for(lambda reqs: {r.ce_id for r in reqs} >= set(ids))
    finally:
        worker.stop()


def test_sighup_reloads(tmp_path: Path, sinks) -> None:  # type: ignore[no-untyped-def]
    inventory, payment = sinks
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text(("inventory", inventory.url)))
    worker = Worker(tmp_path)
    try:
        worker.proc.send_signal(signal.SIGHUP)
        routes.write_text(routes_text(("inventory", inventory.url), ("payment", payment.url)))
        worker.proc.send_signal(signal.SIGHUP)
        worker.wait_log("routes reloaded")
    finally:
        worker.stop()
