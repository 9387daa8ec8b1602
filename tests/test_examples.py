"""Every example in ``examples/`` runs for real: its folder copied to a temporary directory, its
services started on free loopback ports, events published with the ``evroute`` CLI, a worker
run with ``--drain``, and what the services and handlers received checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCENARIO = ROOT.parent / "shared" / "scenario.md"


class Example:
    """One example folder, copied under ``tmp_path``, with the processes started for it."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.folder = tmp_path / name
        shutil.copytree(EXAMPLES / name, self.folder)
        self.db = tmp_path / "evroute.db"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def evroute(self, *args: str, timeout: float = 30.0, expect: int = 0) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "evroute",
            "--db",
            str(self.db),
            "--routes",
            str(self.folder / "routes.yaml"),
        ]
        result = subprocess.run(
            [*argv, *args], env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == expect, (
            f"evroute {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def publish(self, events_file: str) -> None:
        out = self.evroute("publish", "--broker", "order-broker", "--file", events_file).stdout
        assert "duplicates 0" in out, out

    def drain(self) -> str:
        """``evroute worker --drain``; its log (stderr)."""
        return self.evroute("worker", "--drain").stderr

    def dead_letters(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = json.loads(self.evroute("dlq", "list", "--json").stdout)
        return rows

    def service(self, script: Path | str, *args: str, var: str | None = None) -> int:
        """Starts an HTTP service on a free port (``--port``), waits until it answers, and puts
        the port in the environment as ``var`` for the routes file's ``${VAR}``."""
        port = free_port()
        log = (self.folder / f"service-{port}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(script), *args, "--port", str(port)],
            env=self.env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{script} did not start: {(self.folder / f'service-{port}.log').read_text()}"
                    )
                time.sleep(0.02)
        if var:
            self.env[var] = str(port)
        return port

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


Examples = Callable[[str], Example]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Examples]:
    """``example("cesql")``: that folder, ready to run; its processes stop after the test."""
    started: list[Example] = []

    def make(name: str) -> Example:
        started.append(Example(tmp_path, name))
        return started[-1]

    yield make
    for ex in started:
        ex.stop()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# --------------------------------------------------------------------------- order-fanout


def knative_documents(text: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "apiVersion" in d]


def test_order_fanout_holds_the_scenario_knative_yaml_unchanged() -> None:
    if not SCENARIO.exists():
        pytest.skip(f"the scenario text is not available at {SCENARIO}")
    text = SCENARIO.read_text(encoding="utf-8")
    block = next(b for b in text.split("```yaml")[1:] if "kind: Broker" in b and "kind: Trigger" in b)
    scenario_docs = knative_documents(block.split("```")[0])
    assert [d["kind"] for d in scenario_docs] == ["Broker", "Trigger", "Trigger"]
    ours = knative_documents((EXAMPLES / "order-fanout" / "routes.yaml").read_text(encoding="utf-8"))
    assert ours == scenario_docs


def test_order_fanout_loads_and_delivers_to_real_services(example: Examples) -> None:
    ex = example("order-fanout")
    service = EXAMPLES / "service.py"
    routes = ex.folder / "routes.yaml"
    original = routes.read_bytes()
    # Without the ports the ${VAR}s cannot expand: refused, naming the variable.
    refused = ex.evroute("routes", "check", expect=2)
    assert "INVENTORY_PORT" in refused.stderr, refused.stderr

    # Inventory is down for good (its dead letters must reach inventory-dlq through the
    # services: map); payment is up.
    inventory_log, payment_log, dlq_log = (ex.folder / f"{n}.log" for n in ("inventory", "payment", "dlq"))
    ex.service(
        service,
        "--name",
        "inventory",
        "--fail-for",
        "3600",
        "--log",
        str(inventory_log),
        var="INVENTORY_PORT",
    )
    ex.service(service, "--name", "payment", "--log", str(payment_log), var="PAYMENT_PORT")
    ex.service(service, "--name", "dlq", "--log", str(dlq_log), var="DLQ_PORT")
    check = ex.evroute("routes", "check")
    assert "inventory-trigger" in check.stdout and "payment-trigger" in check.stdout

    ids = [f"order-{n}" for n in range(3)]
    events = [
        {
            "specversion": "1.0",
            "type": "order.placed",
            "source": "/shop/checkout",
            "id": i,
            "data": {"order": i},
        }
        for i in ids
    ]
    events.append({"specversion": "1.0", "type": "order.cancelled", "source": "/shop/checkout", "id": "c-1"})
    (ex.folder / "orders.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    ex.publish("orders.jsonl")
    ex.drain()

    assert sorted(lines(payment_log)) == [f"/ {i}" for i in ids]
    assert lines(inventory_log) == []  # a 503 is not logged as received
    assert sorted(lines(dlq_log)) == [f"/inventory {i}" for i in ids]
    dead = ex.dead_letters()
    assert {d["route"] for d in dead} == {"inventory-trigger"}
    assert sorted(str(d["event"]["id"]) for d in dead) == ids  # type: ignore[index]
    assert {d["attempts"] for d in dead} == {4}  # the Trigger's retry: 3, plus the first attempt
    assert {d["status"] for d in dead} == {503}
    assert routes.read_bytes() == original


# --------------------------------------------------------------------------- command subscriber


def test_command_subscriber_writes_labels_and_dead_letters_bad_data(example: Examples) -> None:
    ex = example("command-subscriber")
    labels = ex.folder / "labels.txt"
    ex.publish("orders.jsonl")
    log = ex.drain()

    # Up to 32 labels are printed at once (an unordered route): compare in a fixed order.
    rows = sorted(line.split("\t") for line in lines(labels))
    assert [(r[0], r[3]) for r in rows] == [("1001", "paid-1001"), ("1004", "paid-1004")]
    assert rows[0][1:3] == ["张伟", "上海市浦东新区世纪大道 100 号"]
    [dead] = ex.dead_letters()
    assert dead["event"]["id"] == "paid-1003"  # type: ignore[index]
    assert (dead["status"], dead["attempts"]) == (65, 1)  # EX_DATAERR: permanent, no retry
    assert "no ship_to name and address" in str(dead["error"])
    assert "paid-1003" in log

    # At least once: a redelivered event (here: the route rewound) prints no second label.
    ex.evroute("subscribe", "reset", "shipping-label", "--to", "earliest")
    ex.drain()
    assert len(lines(labels)) == 2


def test_command_subscriber_exit_75_is_retried(example: Examples) -> None:
    ex = example("command-subscriber")
    # The label file cannot be written: label.py exits 75 (EX_TEMPFAIL) and evroute retries.
    ex.env["LABELS_FILE"] = str(ex.folder / "no-such-folder" / "labels.txt")
    ex.publish("orders.jsonl")
    ex.drain()
    dead = {str(d["event"]["id"]): d for d in ex.dead_letters()}  # type: ignore[index]
    assert dead["paid-1001"]["attempts"] == 3  # retry: 2
    assert dead["paid-1001"]["status"] == 75
    assert dead["paid-1003"]["attempts"] == 1  # bad data stays permanent


# --------------------------------------------------------------------------- ordered route


def test_ordered_route_books_every_order_in_sequence_through_failures(example: Examples) -> None:
    ex = example("ordered")
    book = ex.folder / "ledger.tsv"
    port = ex.service(ex.folder / "ledger.py", "--book", str(book), "--flaky", "3", var="LEDGER_PORT")
    check = ex.evroute("routes", "check").stdout
    assert "ordered" in check

    ex.publish("events.jsonl")
    ex.drain()

    published = [json.loads(line)["id"] for line in lines(ex.folder / "events.jsonl")]
    assert [row.split("\t")[3] for row in lines(book)] == published
    assert ex.dead_letters() == []
    answers = lines(ex.folder / f"service-{port}.log")
    assert sum(a.endswith("-> 503 ledger busy, try again") for a in answers) == 3  # each held the route


# --------------------------------------------------------------------------- reply pipeline


def test_reply_pipeline_chains_inventory_replies_into_payment(example: Examples) -> None:
    ex = example("reply-pipeline")
    shop = ex.folder / "shop.py"
    payments = ex.folder / "payments.jsonl"
    ex.service(shop, "inventory", var="INVENTORY_PORT")
    ex.service(shop, "payment", "--log", str(payments), var="PAYMENT_PORT")
    ex.publish("orders.jsonl")
    ex.drain()

    charged = sorted((json.loads(line) for line in lines(payments)), key=lambda e: e["id"])
    assert [e["id"] for e in charged] == ["order-2001-reserved", "order-2003-reserved", "order-2004-reserved"]
    assert {e["type"] for e in charged} == {"order.reserved"}
    assert {e["source"] for e in charged} == {"/inventory"}
    assert {e["evroutehops"] for e in charged} == {"1"}  # one generation after the published order
    assert charged[0]["subject"] == "order-2001"
    assert charged[0]["data"] == {"order": 2001, "sku": "SKU-1", "quantity": 2, "reserved": True}

    # The replies are in the log like any published event; the backorder reached no route.
    listed = json.loads(ex.evroute("events", "list", "--broker", "order-broker", "--json").stdout)
    types = sorted(e["event"]["type"] for e in listed)
    assert types == ["order.backordered"] + ["order.placed"] * 4 + ["order.reserved"] * 3
    shown = json.loads(ex.evroute("events", "show", "order-2002-backordered", "--json").stdout)
    assert {r["route"]: r["state"] for r in shown["routes"]} == {
        "inventory": "filtered",
        "payment": "filtered",
    }
    assert ex.dead_letters() == []


# --------------------------------------------------------------------------- CESQL


def test_cesql_filters_pick_their_events(example: Examples) -> None:
    ex = example("cesql")
    ex.publish("orders.jsonl")
    ex.drain()

    def recorded(name: str) -> list[str]:
        return sorted(line.split("\t")[0] for line in lines(ex.folder / name))

    assert recorded("eu-review.log") == ["o-1", "o-10"]
    assert recorded("cn-orders.log") == ["o-7", "o-8"]
    assert ex.dead_letters() == []

    # `routes test` names the filter part that did not match, and takes extensions as text.
    out = ex.evroute(
        "routes",
        "test",
        "--broker",
        "order-broker",
        "--type",
        "order.placed",
        "--source",
        "/shop",
        "--subject",
        "us-3",
        "--ext",
        "amount=900",
        "--ext",
        "region=cn-east",
        "--json",
    ).stdout
    verdict = {r["route"]: r for r in json.loads(out)}
    assert verdict["eu-review"]["matched"] is False
    assert "subject LIKE 'eu-%'" in verdict["eu-review"]["failed_filter"]
    assert verdict["cn-orders"]["matched"] is True


# --------------------------------------------------------------------------- demo


@pytest.mark.timeout(180)
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    for var in ("EVROUTE_DB", "EVROUTE_ROUTES"):
        env.pop(var, None)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert "[10/10]" in out
    assert "inventory received 50 orders" in out
    assert "inventory 70, notification 20, payment 0" in out
    assert "payment received 70 orders; its dead-letter queue is empty" in out
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("evroute-demo-")]
    assert (folder / "evroute.db").exists()
    # `subscribe add` appends a route above the Triggers; that moves them but changes nothing.
    worker_log = (folder / "worker.log").read_text()
    assert "route notification added" in worker_log
    assert "changed" not in worker_log, worker_log


# --------------------------------------------------------------------------- EventTransform


def test_eventtransform_delivers_to_its_sink_and_replies_without_one(example: Examples) -> None:
    ex = example("eventtransform")
    ledger = ex.folder / "ledger.jsonl"
    ex.service(ex.folder / "ledger.py", "--log", str(ledger), var="LEDGER_PORT")
    (ex.folder / "order.json").write_text(lines(ex.folder / "orders.jsonl")[0])
    shown = json.loads(
        ex.evroute("routes", "test", "order.json", "--broker", "order-broker", "--json").stdout
    )
    assert [(r["route"], r["matched"]) for r in shown] == [
        ("order-summary", True),
        ("order-enrich", True),
        ("enriched-audit", False),
    ]
    assert shown[0]["transformed"]["type"] == "order.summary"
    assert shown[0]["transformed"]["data"] == {"order": 3001, "items": 2, "total": 30}
    assert shown[1]["transformed"]["type"] == "order.enriched"
    ex.publish("orders.jsonl")
    ex.drain()

    got = sorted((json.loads(line) for line in lines(ledger)), key=lambda e: (e["path"], e["id"]))
    summaries = [e for e in got if e["path"] == "/summary"]
    assert [(e["id"], e["type"], e["source"], e["subject"]) for e in summaries] == [
        ("order-3001", "order.summary", "/shop/checkout", "eu-3001"),
        ("order-3002", "order.summary", "/shop/checkout", "us-3002"),
    ]
    assert [e["data"] for e in summaries] == [
        {"order": 3001, "items": 2, "total": 30},
        {"order": 3002, "items": 1, "total": 40},
    ]
    audits = [e for e in got if e["path"] == "/audit"]
    assert [(e["id"], e["type"], e["region"], e["evroutehops"]) for e in audits] == [
        ("order-3001-enriched", "order.enriched", "eu", "1"),
        ("order-3002-enriched", "order.enriched", "us", "1"),
    ]
    assert audits[0]["data"]["express"] is True and audits[1]["data"]["express"] is False
    listed = json.loads(ex.evroute("events", "list", "--broker", "order-broker", "--json").stdout)
    assert sorted(e["event"]["type"] for e in listed) == ["order.enriched"] * 2 + ["order.placed"] * 2
    assert ex.dead_letters() == []
