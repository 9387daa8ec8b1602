"""The order fan-out, end to end: `make demo`.

Starts inventory, payment, notification and dead-letter services on loopback, a worker on
the scenario's Knative routes, publishes orders, lets payment fail for a while (retries,
then dead letters), adds a notification route while the worker runs, replays the dead
letters once payment is back, and ends with `evroute status`. Everything it starts is
stopped at the end; everything it writes lives in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "evroute.db"
        self.routes = folder / "routes.yaml"
        self.ports = {name: free_port() for name in ("inventory", "payment", "notification", "dlq")}
        self.env = {
            **os.environ,
            "INVENTORY_PORT": str(self.ports["inventory"]),
            "PAYMENT_PORT": str(self.ports["payment"]),
            "DLQ_PORT": str(self.ports["dlq"]),
            "EVROUTE_DB": str(self.db),
            "EVROUTE_ROUTES": str(self.routes),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.step_no = 0

    # ------------------------------------------------------------------ helpers

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n\033[1m[{self.step_no}/{STEPS}] {text}\033[0m", flush=True)

    def evroute(self, *args: str, quiet: bool = False) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "evroute", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=quiet,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"evroute {' '.join(args)} failed ({result.returncode}): {result.stderr or ''}")
        return result.stdout or ""

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args, env=self.env, cwd=self.folder, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def service(self, name: str, *extra: str) -> None:
        self.start(
            [
                sys.executable,
                str(HERE / "service.py"),
                "--name",
                name,
                "--port",
                str(self.ports[name]),
                *extra,
            ],
            self.folder / f"{name}.log",
        )
        self.wait(lambda: self.seen(name) >= 0, f"{name} to start")

    def seen(self, name: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=1) as r:
                return int(json.load(r)["seen"])
        except OSError:
            return -1

    def control(self, name: str, fail: bool) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[name]}/control",
            data=json.dumps({"fail": fail}).encode(),
            method="POST",
        )
        urllib.request.urlopen(req, timeout=2).close()

    def wait(self, predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise SystemExit(f"demo: gave up waiting for {what}")

    def dead_letters(self, route: str) -> int:
        out = self.evroute("dlq", "list", "--route", route, "--json", quiet=True)
        return len(json.loads(out))

    def orders(self, start: int, count: int) -> Path:
        path = self.folder / f"orders-{start}.jsonl"
        with path.open("w") as fh:
            for n in range(start, start + count):
                event = {
                    "specversion": "1.0",
                    "type": "order.placed",
                    "source": "/shop/checkout",
                    "id": f"order-{n:05d}",
                    "datacontenttype": "application/json",
                    "data": {"order": n, "sku": f"SKU-{n % 7}", "quantity": 1 + n % 3, "amount": 19.9 + n},
                }
                fh.write(json.dumps(event) + "\n")
        return path

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # ------------------------------------------------------------------ the story

    def run(self) -> None:
        self.step("A fresh database and the scenario's Knative Broker + 2 Triggers as routes.yaml")
        shutil.copy(HERE / "order-fanout" / "routes.yaml", self.routes)
        self.evroute("routes", "check")

        self.step(
            "Starting inventory, payment (down: 503), notification and dead-letter services on loopback"
        )
        self.service("inventory")
        self.service("payment", "--fail-for", "3600")
        self.service("notification")
        self.service("dlq")

        self.step("Starting `evroute worker` (log in worker.log)")
        self.start([sys.executable, "-m", "evroute", "worker"], self.folder / "worker.log")
        self.wait(lambda: "route" in (self.folder / "worker.log").read_text(), "the worker to start")

        self.step("Publishing 50 order.placed events to order-broker")
        self.evroute("publish", "--broker", "order-broker", "--file", str(self.orders(0, 50)))
        self.wait(lambda: self.seen("inventory") >= 50, "inventory to get every order")
        print(
            f"inventory received {self.seen('inventory')} orders; payment is retrying (retry: 5, exponential)"
        )
        self.evroute("status")

        self.step(
            "Payment stays down: after 6 attempts each order is dead-lettered (and sent to payment-dlq)"
        )
        self.wait(lambda: self.dead_letters("payment-trigger") >= 50, "payment dead letters", timeout=90)
        self.evroute("dlq", "list", "--limit", "5")

        self.step(
            "Adding a notification service with zero code changes: `evroute subscribe add` while the worker runs"
        )
        self.evroute(
            "subscribe",
            "add",
            "notification",
            "--broker",
            "order-broker",
            "--filter",
            "type=order.placed",
            "--sink",
            f"http://127.0.0.1:{self.ports['notification']}/",
        )
        time.sleep(1.5)  # the worker reloads routes.yaml within a second

        self.step("Publishing 20 more orders: inventory and notification get them, payment keeps failing")
        self.evroute("publish", "--broker", "order-broker", "--file", str(self.orders(50, 20)))
        self.wait(lambda: self.seen("notification") >= 20, "notification to get the new orders")
        print(f"inventory {self.seen('inventory')}, notification {self.seen('notification')}, payment 0")

        self.step(
            "Payment recovers: retries in flight go through, then `evroute dlq replay` sends the dead letters"
        )
        self.control("payment", False)
        self.wait(lambda: self.seen("payment") >= 20, "payment to catch up on retries")
        self.evroute("dlq", "replay", "--route", "payment-trigger", "--all")
        self.wait(
            lambda: self.seen("payment") >= 70 and self.dead_letters("payment-trigger") == 0,
            "payment to receive the replayed orders",
        )
        print(f"payment received {self.seen('payment')} orders; its dead-letter queue is empty")

        self.step("Where everything stands: `evroute status`")
        self.evroute("status")

        self.step("Stopping the worker and the services")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="evroute-demo-"))
    demo = Demo(folder)
    print(f"evroute demo: the order fan-out of an e-commerce shop (files in {folder})")
    try:
        demo.run()
    finally:
        demo.stop_all()
    print(f"\nDone. Logs and the database are in {folder}")


if __name__ == "__main__":
    main()
