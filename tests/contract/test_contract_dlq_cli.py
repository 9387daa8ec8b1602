"""`evroute dlq list/show/replay/purge` on every store, through the real entry point."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from contract.stores import StoreCase
from evroute.clock import parse_time
from evroute.cloudevent import make_event
from evroute.store.base import DeadLetter, NewDeadLetter, RouteStart

DLQ_KEYS = {
    "id",
    "route",
    "seq",
    "event",
    "attempts",
    "status",
    "reason",
    "error",
    "body",
    "first_failed_at",
    "dead_at",
    "replayed_at",
    "dls_outcome",
}


class Env:
    """A store holding dead letters of two routes, and the global options to reach it."""

    def __init__(self, store: StoreCase) -> None:
        self.case = store
        self.routes = str(store.routes_path)  # absent: dlq commands need no routes file
        self.now = time.time()
        self.ids: dict[str, list[int]] = {"payment": [], "inventory": []}
        with store.store() as s:
            s.ensure_routes(
                [RouteStart("payment", "default", "earliest"), RouteStart("inventory", "default", "earliest")]
            )
            worker = s.deliveries()
            for i in range(5):
                event = make_event(
                    type="order.placed",
                    source="/shop",
                    id=f"order-{i}",
                    data=json.dumps({"order": i}).encode(),
                    datacontenttype="application/json",
                )
                s.append("default", [event])
                seq = s.find(event.id)[0].seq
                name = "payment" if i < 3 else "inventory"
                letter = NewDeadLetter(
                    route=name,
                    broker="default",
                    seq=seq,
                    event=event,
                    attempts=4,
                    status=503,
                    reason="retries exhausted",
                    error="HTTP 503 Service Unavailable",
                    body=b"payment down \xff\xfe",
                    first_failed_at=self.now - 100 + i,
                    dead_at=self.now - 50 + i,
                )
                self.ids[name].append(asyncio.run(worker.dead_letter(letter, None, None)))

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return self.case.cli("dlq", *args)

    def letters(self) -> list[DeadLetter]:
        with self.case.store() as s:
            return s.dead_letters()

    def replayed(self) -> list[int]:
        return [d.id for d in self.letters() if d.replayed_at is not None]


@pytest.fixture
def env(store: StoreCase) -> Env:
    return Env(store)


def test_list_table_and_json(env: Env) -> None:
    code, out, err = env("list")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header[:5] == ["id", "route", "event", "id", "type"]
    assert "order-4" in out and "retries exhausted" in out and "503" in out
    code, out, _ = env("list", "--json")
    docs = json.loads(out)
    assert len(docs) == 5 and all(set(d) == DLQ_KEYS for d in docs)
    first = docs[0]
    assert first["route"] == "payment" and first["seq"] is not None and first["attempts"] == 4
    assert first["event"]["id"] == "order-0" and first["event"]["data"] == {"order": 0}
    assert first["body"] == "payment down \ufffd\ufffd"
    assert parse_time(first["dead_at"]) == pytest.approx(env.now - 50, abs=0.01)
    assert first["dead_at"].endswith("Z") and first["replayed_at"] is None and first["dls_outcome"] is None
    code, out, _ = env("list", "--route", "inventory", "--json")
    assert [d["id"] for d in json.loads(out)] == env.ids["inventory"]
    code, out, _ = env("list", "--limit", "2", "--json")
    assert len(json.loads(out)) == 2
    code, _, err = env("list", "--limit", "0")
    assert code == 2 and "--limit" in err


def test_show_everything_stored(env: Env) -> None:
    dlq_id = env.ids["payment"][1]
    code, out, err = env("show", str(dlq_id), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == DLQ_KEYS | {"broker"}
    assert doc["event"]["id"] == "order-1" and doc["broker"] == "default"
    code, out, _ = env("show", str(dlq_id))
    assert code == 0
    assert "reason:" in out and "retries exhausted" in out
    assert "payment down \ufffd\ufffd" in out
    assert '"id": "order-1"' in out and '"order": 1' in out
    code, _, err = env("show", "999")
    assert code == 2 and err.strip() == "Error: no dead letter with id 999 (see `evroute dlq list`)"


def test_replay_dry_run_changes_nothing(env: Env) -> None:
    code, out, err = env("replay", "--all", "--dry-run")
    assert code == 0, err
    assert "would replay 5 dead letters (dry run)" in out and "order-3" in out
    assert env.replayed() == []
    assert all(d.replayed_at is None for d in env.letters())


def test_replay_needs_a_selection(env: Env) -> None:
    code, _, err = env("replay")
    assert code == 2 and err.startswith("Error: nothing selected: give dead letter IDs, --route R")
    code, _, err = env("replay", "1", "--all")
    assert code == 2 and err.strip() == "Error: give dead letter IDs or --all, not both"
    inventory_id = env.ids["inventory"][0]
    code, _, err = env("replay", str(inventory_id), "--route", "payment")
    assert code == 2 and f"dead letter {inventory_id} belongs to route 'inventory', not 'payment'" in err
    code, _, err = env("replay", "1", "999")
    assert code == 2 and "no dead letter with id 999" in err
    assert env.replayed() == []  # nothing half-done


def test_purge_requires_yes(env: Env) -> None:
    code, _, err = env("purge")
    assert code == 2 and err.startswith("Error:") and "--yes" in err
    assert len(env.letters()) == 5
    code, out, err = env("purge", "--route", "inventory", "--yes")
    assert code == 0, err
    assert out.strip() == "purged 2 dead letters"
    assert {d.route for d in env.letters()} == {"payment"}


def test_purge_before_a_time(env: Env) -> None:
    cut = env.now - 50 + 1.5  # after the first two dead letters
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int((cut % 1) * 1000):03d}Z"
    code, out, err = env("purge", "--before", stamp, "--yes")
    assert code == 0, err
    assert out.strip() == "purged 2 dead letters"
    assert [d.event.id for d in env.letters()] == ["order-2", "order-3", "order-4"]
    code, out, _ = env("purge", "--before", "1h", "--yes")
    assert out.strip() == "purged 0 dead letters"
    code, _, err = env("purge", "--before", "yesterday", "--yes")
    assert code == 2 and err.startswith("Error: bad --before 'yesterday'")


def test_replay_checks_the_routes_file(env: Env) -> None:
    Path(env.routes).write_text("routes:\n  - {name: payment, subscriber: 'http://127.0.0.1:9/pay'}\n")
    inventory_id = env.ids["inventory"][0]
    code, _, err = env("replay", str(inventory_id))
    assert code == 2
    assert err.strip() == (
        f"Error: dead letter {inventory_id} belongs to route 'inventory', which is not in {env.routes} "
        "(add the route back first)"
    )
    assert env.replayed() == []
    code, out, err = env("replay", "--all")
    assert code == 0, err
    assert "skipping 2 dead letters of routes not in the routes file: inventory" in err
    assert out.strip() == "replayed 3 dead letters; the worker delivers them (running: no)"
    assert env.replayed() == env.ids["payment"]
