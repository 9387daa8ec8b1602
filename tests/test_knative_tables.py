"""Knative Eventing's own filter tables, run against evroute's filters (tests/data/knative/).

The unit tables (pkg/eventfilter) and the webhook's validation table run against the compiled
filters; the end-to-end Trigger features (test/rekt) run as Trigger documents through the real
delivery engine to a real loopback receiver, one broker per feature, as Knative installs them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from evroute.cloudevent import from_dict
from evroute.filters import check, compile_filters
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors
from evroute.store import log as event_log
from evroute.worker.engine import Engine

from receiver import Receiver

DATA = Path(__file__).parent / "data" / "knative"


def _table(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
    return loaded


FILTER_TABLE = _table("eventfilter_cases.yaml")
VALIDATION_TABLE = _table("trigger_filter_validation.yaml")
FEATURES = _table("new_trigger_filters.yaml")


def _label(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@pytest.mark.parametrize("case", FILTER_TABLE["cases"], ids=lambda c: c["test"])
def test_knative_eventfilter_table(case: dict[str, Any]) -> None:
    event = FILTER_TABLE["events"][case["event"]]
    filter_, filters = case.get("filter") or {}, case.get("filters") or []
    assert check(filter_ or None, filters or None) == []
    matcher = compile_filters(filter_, filters)
    # Knative's broker delivers unless the filter says FailFilter (NoFilter passes).
    assert matcher.matches(event) is (case["want"] != "FailFilter")
    assert (matcher.explain(event) is None) is (case["want"] != "FailFilter")


@pytest.mark.parametrize("case", VALIDATION_TABLE["cases"], ids=lambda c: c["name"])
def test_knative_trigger_filter_validation_table(case: dict[str, Any]) -> None:
    problems = check(case.get("filter"), case.get("filters"))
    if case["valid"]:
        assert problems == []
        compile_filters(case.get("filter") or {}, case.get("filters") or [])
    else:
        assert [_label(p.path) for p in problems] == [case["field"]]


def test_rekt_trigger_filter_features_through_the_engine(tmp_path: Path) -> None:
    """Every feature's Triggers as Trigger documents on a broker of their own; every event
    published; the engine delivers to a loopback receiver; each subscriber got exactly the
    events the feature says it must."""
    receiver = Receiver().start()
    try:
        docs: list[dict[str, Any]] = []
        expected: dict[str, set[str]] = {}
        published: dict[str, list[dict[str, Any]]] = {}
        for f, feature in enumerate(FEATURES["features"]):
            broker = f"feature-{f}"
            for t, trigger in enumerate(feature["triggers"]):
                name = f"f{f}-t{t}"
                spec: dict[str, Any] = {"broker": broker, "subscriber": {"uri": f"{receiver.url}/{name}"}}
                if "filter" in trigger:
                    spec["filter"] = {"attributes": trigger["filter"]}
                if "filters" in trigger:
                    spec["filters"] = trigger["filters"]
                docs.append(
                    {
                        "apiVersion": "eventing.knative.dev/v1",
                        "kind": "Trigger",
                        "metadata": {"name": name},
                        "spec": spec,
                    }
                )
                expected[f"/{name}"] = set()
                for e, sent in enumerate(trigger["events"]):
                    # The same event is sent once per feature; its id says which one it is.
                    event = {**FEATURES["base-event"], **sent["event"], "id": f"{name}-e{e}"}
                    published.setdefault(broker, []).append(event)
                    if sent["deliver"]:
                        expected[f"/{name}"].add(event["id"])
        text = yaml.safe_dump_all(docs, sort_keys=False)
        path = tmp_path / "routes.yaml"
        path.write_text(text)
        routeset = load_routes_text(text, str(path))
        db = str(tmp_path / "evroute.db")
        with Store(db) as store:
            cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])
            for broker, events in published.items():
                event_log.append(store, broker, [from_dict(json.loads(json.dumps(e))) for e in events])

        async def main() -> None:
            store = Store(db)
            engine = Engine(store, routeset)
            await engine.start()
            try:
                await engine.run_until_idle(True)
            finally:
                await engine.stop()
                store.close()

        asyncio.run(asyncio.wait_for(main(), 60))
        got: dict[str, set[str]] = {p: set() for p in expected}
        for request in receiver.requests:
            got[request.path].add(request.ce_id)
        # As in the feature, each subscriber is asserted on the events sent for it: a sibling
        # trigger on the same broker also sees them, and its own rows decide what it must get.
        for name_path, ids in expected.items():
            own = {i for i in got[name_path] if i.startswith(name_path[1:] + "-")}
            assert own == ids, name_path
        assert sum(len(ids) for ids in expected.values()) > 20
    finally:
        receiver.stop()
