"""The order fan-out on a NATS JetStream server with two workers: `make demo-nats`.

Starts a nats-server with JetStream (the one on PATH, else the one the test extra installs
beside this Python), the inventory and payment services, uploads the scenario's routes to the
server (`evroute routes apply`), starts two `evroute worker` processes, publishes 100 orders
and shows that every order reached both services once, shared between the two workers, then
`evroute status`. Everything it starts is stopped; everything it writes lives in a temporary
folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import HERE, Demo, free_port

ORDERS = 100


def nats_server() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not os.path.exists(found):
        raise SystemExit("demo-nats: no nats-server (install one, or `make .venv/.installed-test`)")
    return found


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="evroute-demo-nats-"))
    demo = Demo(folder)
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    demo.env.pop("EVROUTE_DB", None)
    demo.env["EVROUTE_STORE"] = url
    shutil.copy(HERE / "order-fanout" / "routes.yaml", demo.routes)
    try:
        print(f"\033[1m[1/5] nats-server with JetStream on {url} (store in {folder / 'nats'})\033[0m")
        demo.start(
            [nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder / "nats")],
            folder / "nats.log",
        )
        demo.wait(lambda: _answers(port), "nats-server to start")
        print("\033[1m[2/5] inventory and payment services; the routes uploaded to KV EVROUTE_ROUTES\033[0m")
        demo.service("inventory")
        demo.service("payment")
        demo.evroute("routes", "apply")
        print("\033[1m[3/5] two workers share every route\033[0m")
        for name in ("worker-1", "worker-2"):
            demo.start([sys.executable, "-m", "evroute", "worker", "-v"], folder / f"{name}.log")
        demo.wait(lambda: _running(demo), "the workers to join")
        print(f"\033[1m[4/5] {ORDERS} orders published\033[0m")
        demo.evroute("publish", "--broker", "order-broker", "--file", str(demo.orders(0, ORDERS)))
        demo.wait(lambda: demo.seen("inventory") >= ORDERS and demo.seen("payment") >= ORDERS, "deliveries")
        print(f"inventory received {demo.seen('inventory')} orders, payment {demo.seen('payment')}")
        for name in ("worker-1", "worker-2"):
            log = (folder / f"{name}.log").read_text()
            print(f"{name} made {log.count(' delivered ')} of the {2 * ORDERS} deliveries")
        # the workers report their counters with their heartbeats (every 2 s)
        demo.wait(lambda: _delivered(demo) >= 2 * ORDERS, "the workers' counters")
        print("\033[1m[5/5] evroute status\033[0m")
        demo.evroute("status")
        return 0
    finally:
        demo.stop_all()


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _delivered(demo: Demo) -> int:
    import json

    out = demo.evroute("status", "--json", quiet=True)
    return sum(int(r["delivered"] or 0) for r in json.loads(out)["routes"])


def _running(demo: Demo) -> bool:
    import json

    out = demo.evroute("status", "--json", quiet=True)
    return bool(json.loads(out)["worker"]["state"] == "running")


if __name__ == "__main__":
    sys.exit(main())
