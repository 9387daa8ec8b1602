"""examples/dapr-orders runs for real: Dapr's own Subscription and Resiliency YAML, Dapr-style
apps, events published over Dapr's HTTP publish API to a running worker and with
`evroute publish --topic`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from test_examples import EXAMPLES, Example, free_port, lines


@pytest.fixture
def ex(tmp_path: Path):  # type: ignore[no-untyped-def]
    example = Example(tmp_path, "dapr-orders")
    yield example
    example.stop()


def test_dapr_orders_example_keeps_dapr_yaml_unchanged() -> None:
    docs = [
        d for d in yaml.safe_load_all((EXAMPLES / "dapr-orders" / "routes.yaml").read_text()) if "kind" in d
    ]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("dapr.io/v1alpha1", "Subscription"),
        ("dapr.io/v2alpha1", "Subscription"),
        ("dapr.io/v1alpha1", "Subscription"),
        ("dapr.io/v1alpha1", "Resiliency"),
    ]


@pytest.mark.timeout(120)
def test_dapr_orders_example_delivers_by_rule_retries_drops_and_dead_letters(ex: Example) -> None:
    app = ex.folder / "app.py"
    ex.service(app, "--log", str(ex.folder / "inventory.log"), "--drop-invalid", var="INVENTORY_PORT")
    ex.service(
        app,
        "--log",
        str(ex.folder / "payment.log"),
        "--drop-invalid",
        "--retry-first",
        "2",
        var="PAYMENT_PORT",
    )
    ex.service(app, "--log", str(ex.folder / "audit.log"), var="AUDIT_PORT")
    checked = ex.evroute("routes", "check").stdout
    assert "inventory" in checked and "payment" in checked and "dead-orders" in checked

    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "evroute", "--db", str(ex.db), "--routes", str(ex.folder / "routes.yaml"),
         "worker", "--listen", f"127.0.0.1:{port}"],
        env=ex.env, cwd=ex.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    ex.procs.append(worker)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
        time.sleep(0.05)

    def dapr_publish(order_id: str, data: object, type_: str = "order.placed") -> None:
        # What a Dapr app does: POST to its sidecar's publish API (here, evroute's ingress).
        query = urlencode({"metadata.cloudevent.id": order_id, "metadata.cloudevent.type": type_})
        r = httpx.post(f"{base}/v1.0/publish/pubsub/orders?{query}", json=data)
        assert r.status_code == 204, r.text

    dapr_publish("o-1", {"amount": 50})
    dapr_publish("o-2", {"amount": 5000})
    dapr_publish("o-3", {"amount": -5})  # every app DROPs it
    dapr_publish("o-4", {"amount": 10}, "order.cancelled")  # no payment rule matches
    out = ex.evroute(
        "publish", "--broker", "pubsub", "--topic", "orders", "--type", "order.placed", "--id", "o-5",
        "--data", '{"amount": 70}',
    ).stdout  # fmt: skip
    assert "stored o-5" in out

    def logged(name: str) -> list[str]:
        return sorted(lines(ex.folder / name))

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(logged("inventory.log")) == 4 and len(logged("payment.log")) == 3 and logged("audit.log"):
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err.decode()
    assert logged("inventory.log") == [
        "/reduce-inventory o-1",
        "/reduce-inventory o-2",
        "/reduce-inventory o-4",
        "/reduce-inventory o-5",
    ]
    # Large orders go to review by CEL rule; RETRY answers were retried (constant 200ms).
    assert logged("payment.log") == ["/payments o-1", "/payments o-5", "/payments/review o-2"]
    # The dropped payment reached the dead-letter topic's subscriber; inventory has none.
    [dead] = logged("audit.log")
    assert dead.startswith("/dead-orders o-3.deadletter.payment")
    letters = {(d["route"], json.dumps(d["event"]["id"])): d for d in ex.dead_letters()}
    assert {(r, i) for r, i in letters} == {("inventory", '"o-3"'), ("payment", '"o-3"')}
    assert {d["reason"] for d in letters.values()} == {"dropped by subscriber"}
    shown = json.loads(ex.evroute("events", "show", "o-4", "--json").stdout)
    payment = next(r for r in shown["routes"] if r["route"] == "payment")
    assert payment["state"] == "filtered" and payment["failed_filter"].startswith("no matching rule")
