"""Editing routes.yaml: byte-for-byte round trips, refusals that write nothing, atomic replacement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from evroute.errors import InvalidInput, NotFound, RoutesInvalid, RuntimeFault
from evroute.routes import edit
from evroute.routes.edit import add_route, remove_route, set_paused
from evroute.routes.load import load_routes

ROOT = Path(__file__).resolve().parents[1]

QUIRKY = """\
# Routes of the shop.   (a header comment)
services:
   inventory-service:   http://127.0.0.1:8081/     # three-space indent, padded value
   payment-service: "http://127.0.0.1:8082/"
defaults:
     delivery: {retry: 2,   backoffDelay: 500ms}   # five spaces
routes:
      # the first route, commented
      -   name: audit          # padded after the dash
          subscriber:  'http://127.0.0.1:9100/audit'
          filter:
                 type: order.placed       # deep indent
      - {name: legacy, subscriber: "http://127.0.0.1:9100/legacy", paused: false}   # flow item

      # a commented-out route stays where it is:
      # - name: old
# after the list
---
# 触发器 1: 库存处理
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: inventory-trigger
spec:
  broker: order-broker
  filter:
    attributes:
      type: order.placed
  subscriber:
    ref:
      apiVersion: v1
      kind: Service
      name: inventory-service
...
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: payment-trigger, annotations: {team: payments}}
spec: {broker: order-broker, subscriber: {ref: {name: payment-service}}}
"""

ENTRY = {
    "name": "notification",
    "broker": "order-broker",
    "filters": [{"exact": {"type": "order.placed"}}, {"cesql": "subject LIKE 'eu-%'"}],
    "subscriber": "http://127.0.0.1:9100/notify",
    "delivery": {"retry": 5, "deadLetterSink": {"uri": "http://127.0.0.1:9100/dlq"}, "ordering": "ordered"},
    "start": "earliest",
}


def write(tmp_path: Path, text: str, name: str = "routes.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def test_add_then_remove_gives_back_the_file_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    before = read(path)
    routes = add_route(path, ENTRY)
    route = routes.by_name()["notification"]
    assert route.broker == "order-broker" and route.delivery.retry == 5 and route.delivery.ordered
    assert route.matcher.matches({"type": "order.placed", "subject": "eu-1"})
    after = read(path).decode()
    # Lines were added right after the last route, at the indentation the items use.
    assert "      -   name: notification\n          broker: order-broker\n" in after
    assert "          - cesql: \"subject LIKE 'eu-%'\"\n" in after
    assert after.index("name: notification") < after.index("# a commented-out route")
    remove_route(path, "notification")
    assert read(path) == before


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty file"),
        pytest.param("# just a comment\n", id="comments only"),
        pytest.param("services: {a: http://h/}\n", id="no routes key"),
        pytest.param("settings: {durability: normal}", id="no final newline"),
        pytest.param("routes:\n- name: a\n  subscriber: http://h/\n", id="zero-indent list"),
        pytest.param("routes: [{name: a, subscriber: http://h/} ]\n", id="flow list"),
        pytest.param(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n", id="knative only"
        ),
        pytest.param("routes:\r\n  - name: a\r\n    subscriber: http://h/\r\n", id="CRLF"),
    ],
)
def test_round_trip_on_every_layout(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    add_route(path, {"name": "n", "subscriber": "http://127.0.0.1:1/", "filter": {"type": "x"}})
    assert [r.name for r in load_routes(path, {}).routes][-1] == "n"
    remove_route(path, "n")
    assert read(path) == text.encode()


def test_add_to_a_missing_file_creates_it(tmp_path: Path) -> None:
    path = str(tmp_path / "routes.yaml")
    add_route(
        path,
        {"name": "inventory", "subscriber": "http://127.0.0.1:8081/", "filter": {"type": "order.placed"}},
    )
    assert Path(path).read_text() == textwrap.dedent("""\
        routes:
          - name: inventory
            subscriber: http://127.0.0.1:8081/
            filter: {type: order.placed}
        """)


def test_the_example_file_gets_a_routes_list_and_loses_it_again(tmp_path: Path) -> None:
    original = (ROOT / "examples" / "order-fanout" / "routes.yaml").read_text(encoding="utf-8")
    path = write(tmp_path, original)
    # ${INVENTORY_PORT} and the others are the worker's business: an edit needs none of them
    routes = add_route(path, {"name": "notification", "broker": "order-broker", "subscriber": "http://h/"})
    assert [r.name for r in routes.routes] == ["notification", "inventory-trigger", "payment-trigger"]
    remove_route(path, "notification")
    assert read(path).decode() == original


def test_duplicate_name_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    before = read(path)
    for name in ("audit", "inventory-trigger"):
        with pytest.raises(InvalidInput, match=f"route '{name}' already exists in .*routes.yaml"):
            add_route(path, {"name": name, "subscriber": "http://h/"})
    assert read(path) == before


def test_an_invalid_result_is_refused_before_writing(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    before = read(path)
    with pytest.raises(RoutesInvalid) as info:
        add_route(path, {"name": "n", "subscriber": "http://h/", "delivery": {"retry": -1}})
    (message,) = info.value.problems
    assert message.endswith(
        "route 'n': delivery.retry: must not be negative, got -1 (allowed: an integer >= 0) "
        "(after adding route 'n'; nothing was written)"
    )
    assert read(path) == before
    assert sorted(os.listdir(tmp_path)) == ["routes.yaml"]


def test_an_invalid_file_is_refused_with_its_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "routes:\n  - {name: a, subscriber: nope}\n")
    with pytest.raises(RoutesInvalid) as info:
        add_route(path, {"name": "b", "subscriber": "http://h/"})
    assert info.value.problems[0].startswith(f"{path}:2:27: route 'a': subscriber:")


def test_pause_and_resume_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    before = read(path)
    for name in ("audit", "legacy", "inventory-trigger", "payment-trigger"):
        assert set_paused(path, name, True)
        assert not set_paused(path, name, True)  # already paused: nothing to do
    routes = load_routes(path, {})
    assert all(r.paused for r in routes.routes)
    text = read(path).decode()
    assert "                 type: order.placed       # deep indent\n          paused: true\n" in text
    assert '"http://127.0.0.1:9100/legacy", paused: true}' in text
    assert '  name: inventory-trigger\n  annotations:\n    evroute.dev/paused: "true"\n' in text
    assert "annotations: {team: payments, evroute.dev/paused: " in text
    for name in ("audit", "inventory-trigger", "payment-trigger", "legacy"):
        assert set_paused(path, name, False)
    assert not any(r.paused for r in load_routes(path, {}).routes)
    after = read(path).decode()
    # Everything comes back as it was, except that `paused: false`, set to true by pause, is
    # dropped by resume (the same meaning: not paused).
    assert after == before.decode().replace(
        '"http://127.0.0.1:9100/legacy", paused: false}', '"http://127.0.0.1:9100/legacy"}'
    )


def test_pause_and_resume_a_trigger_written_in_flow_style(tmp_path: Path) -> None:
    text = (
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\n"
        "metadata: {name: t, namespace: shop}\nspec: {subscriber: {uri: 'http://h/'}}\n"
    )
    path = write(tmp_path, text)
    assert set_paused(path, "t", True)
    assert (
        'metadata: {name: t, namespace: shop, annotations: {evroute.dev/paused: "true"}}'
        in read(path).decode()
    )
    assert load_routes(path, {}).routes[0].paused
    assert set_paused(path, "t", False)
    assert read(path) == text.encode()


def test_removing_a_trigger_removes_its_document(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    remove_route(path, "inventory-trigger")
    text = read(path).decode()
    assert "inventory-trigger" not in text and "触发器" not in text
    assert [r.name for r in load_routes(path, {}).routes] == ["audit", "legacy", "payment-trigger"]
    remove_route(path, "payment-trigger")
    remove_route(path, "legacy")
    remove_route(path, "audit")
    assert load_routes(path, {}).routes == ()


def test_unknown_route_is_not_found(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    with pytest.raises(NotFound, match="route 'ghost' is not in"):
        remove_route(path, "ghost")
    with pytest.raises(NotFound):
        set_paused(path, "ghost", True)
    with pytest.raises(InvalidInput, match="not found"):
        remove_route(str(tmp_path / "missing.yaml"), "a")


def test_a_failed_rename_leaves_the_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, QUIRKY)
    before = read(path)

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edit.os, "replace", fail)
    with pytest.raises(RuntimeFault, match=r"cannot write .*: No space left on device"):
        add_route(path, {"name": "n", "subscriber": "http://h/"})
    assert read(path) == before
    assert sorted(os.listdir(tmp_path)) == ["routes.yaml"]


def test_mode_and_symlink_are_kept(tmp_path: Path) -> None:
    real = Path(write(tmp_path, "routes: []\n", "real.yaml"))
    real.chmod(0o640)
    link = tmp_path / "routes.yaml"
    link.symlink_to(real)
    add_route(str(link), {"name": "n", "subscriber": "http://h/"})
    assert link.is_symlink() and "name: n" in real.read_text()
    assert (real.stat().st_mode & 0o777) == 0o640


def test_readers_never_see_a_half_written_file(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = Path(path).read_bytes().decode()
            if text not in seen:
                seen.append(text)
            load_routes(path, {})  # raises on a torn file

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(15):
            add_route(path, {"name": f"r{i}", "subscriber": "http://h/"})
            remove_route(path, f"r{i}")
    finally:
        stop.set()
        thread.join()
    assert read(path) == QUIRKY.encode()
    assert len(seen) >= 2


SCRIPT = """
import sys
from evroute.routes.edit import add_route, remove_route
path = sys.argv[1]
print("ready", flush=True)
i = 0
while True:
    add_route(path, {"name": f"r{i % 3}", "subscriber": "http://h/"})
    remove_route(path, f"r{i % 3}")
    i += 1
"""


def test_kill_9_while_editing_leaves_a_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, QUIRKY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.05, 0.15, 0.3):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, path], env=env, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        names = [r.name for r in load_routes(path, {}).routes]
        assert names[:2] == ["audit", "legacy"] and len(names) in (4, 5)
        if len(names) == 5:
            remove_route(path, names[2])
        assert read(path) == QUIRKY.encode()
