"""W3C trace context through every hop: publish, ingress, deliveries, retries, replies, dead
letters; against real loopback subscribers, a real ingress and a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from ingress_server import IngressThread
from test_cli_publish import run
from test_worker import drain, prepare, routes_of

from evroute import tracing
from evroute.cloudevent import from_json, make_event, to_binary
from evroute.errors import InvalidEvent
from evroute.publish import publish_event
from evroute.store import Store
from evroute.store import log as event_log

from receiver import Reply, Request

ROOT = Path(__file__).resolve().parents[1]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def trace_id(traceparent: str | None) -> str | None:
    parsed = tracing.parse(traceparent)
    return None if parsed is None else parsed[0]


# --------------------------------------------------------------------------- the values


@pytest.mark.parametrize(
    "value",
    [
        PARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-field",  # a later version
    ],
)
def test_valid_traceparents(value: str) -> None:
    assert tracing.parse(value) is not None
    make_event(type="t", extensions={"traceparent": value})


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 has four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        "not a trace",
    ],
)
def test_malformed_traceparent_is_invalid(value: str) -> None:
    with pytest.raises(InvalidEvent, match="attribute 'traceparent' must be a W3C traceparent"):
        make_event(type="t", extensions={"traceparent": value})


def test_tracestate_rules() -> None:
    ok = {"traceparent": PARENT, "tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,tenant@vendor=x"}
    make_event(type="t", extensions=ok)
    with pytest.raises(InvalidEvent, match="'tracestate' needs a 'traceparent'"):
        make_event(type="t", extensions={"tracestate": "a=b"})
    for bad, reason in [
        ("a", "is not key=value"),
        ("A=b", "is not key=value"),
        ("a=b,a=c", "names 'a' twice"),
        (",".join(f"k{i}=v" for i in range(33)), "more than 32"),
        ("a=" + "x" * 600, "longer than 512"),
    ]:
        with pytest.raises(InvalidEvent, match=reason):
            make_event(type="t", extensions={"traceparent": PARENT, "tracestate": bad})


def test_new_and_child_traceparents_are_valid_and_random() -> None:
    made = {tracing.new_traceparent() for _ in range(100)}
    assert len(made) == 100 and all(tracing.parse(v) is not None for v in made)
    child = tracing.child_of(PARENT)
    assert trace_id(child) == TRACE_ID and child != PARENT


# --------------------------------------------------------------------------- publish


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """The real entry point; standard output and error together."""
    code, out, err = run("--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args)
    return code, out + err


def stored(tmp_path: Path) -> list[dict[str, object]]:
    with Store(str(tmp_path / "ev.db")) as store:
        return [dict(e.event.attributes) for e in event_log.read_after(store, "default", 0, 100)]


def test_publish_keeps_a_given_trace_and_gives_one_otherwise(tmp_path: Path) -> None:
    state = "rojo=00f067aa0ba902b7"
    assert (
        cli(
            tmp_path,
            "publish",
            "--type",
            "a",
            "--id",
            "1",
            "--ext",
            f"traceparent={PARENT}",
            "--ext",
            f"tracestate={state}",
        )[0]
        == 0
    )
    assert cli(tmp_path, "publish", "--type", "a", "--id", "2")[0] == 0
    given, made = stored(tmp_path)
    assert (given["traceparent"], given["tracestate"]) == (PARENT, state)
    assert tracing.parse(made["traceparent"]) is not None and trace_id(str(made["traceparent"])) != TRACE_ID
    assert str(made["traceparent"]).endswith("-01")


def test_publish_refuses_a_malformed_traceparent_and_stores_nothing(tmp_path: Path) -> None:
    code, out = cli(tmp_path, "publish", "--type", "a", "--ext", "traceparent=00-abc-01")
    assert code == 2
    assert out.startswith("Error: ") and "W3C traceparent" in out and out.count("\n") == 1
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
        + "\n"
        + json.dumps({"specversion": "1.0", "id": "2", "source": "/s", "type": "t", "tracestate": "a=b"})
        + "\n"
    )
    code, out = cli(tmp_path, "publish", "--file", str(lines))
    assert code == 2 and "line 2" in out and "needs a 'traceparent'" in out
    assert not (tmp_path / "ev.db").exists() or stored(tmp_path) == []


def test_every_event_of_a_file_gets_its_own_trace(tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        "".join(
            json.dumps({"specversion": "1.0", "id": str(i), "source": "/s", "type": "t"}) + "\n"
            for i in range(5)
        )
    )
    assert cli(tmp_path, "publish", "--file", str(lines))[0] == 0
    traces = {trace_id(str(a["traceparent"])) for a in stored(tmp_path)}
    assert len(traces) == 5 and None not in traces


# --------------------------------------------------------------------------- ingress


def test_ingress_takes_the_attribute_then_the_plain_w3c_header(tmp_path: Path) -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with IngressThread(tmp_path / "ev.db") as srv:
        base = {"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}
        post = [
            {**base, "ce-id": "attr", "ce-traceparent": PARENT, "traceparent": other},
            {**base, "ce-id": "header", "traceparent": other, "tracestate": "congo=t61rcWkgMzE"},
            {**base, "ce-id": "bad-header", "traceparent": "00-nope-01", "tracestate": "x=y"},
            {**base, "ce-id": "none"},
        ]
        for headers in post:
            assert httpx.post(srv.url + "/", headers=headers).status_code == 202
        structured = json.dumps(
            {"specversion": "1.0", "id": "structured", "source": "/s", "type": "t", "traceparent": PARENT}
        )
        response = httpx.post(
            srv.url + "/",
            content=structured,
            headers={"Content-Type": "application/cloudevents+json", "traceparent": other},
        )
        assert response.status_code == 202
        bad = httpx.post(srv.url + "/", headers={**base, "ce-id": "bad-attr", "ce-traceparent": "00-nope-01"})
        assert bad.status_code == 400 and "W3C traceparent" in bad.json()["error"]
    events = {str(a["id"]): a for a in stored(tmp_path)}
    assert events["attr"]["traceparent"] == PARENT
    assert (events["header"]["traceparent"], events["header"]["tracestate"]) == (other, "congo=t61rcWkgMzE")
    assert events["structured"]["traceparent"] == PARENT
    for fresh in ("bad-header", "none"):  # a malformed W3C header is ignored, as W3C says
        assert tracing.parse(events[fresh]["traceparent"]) is not None
        assert trace_id(str(events[fresh]["traceparent"])) not in (TRACE_ID, trace_id(other))
        assert "tracestate" not in events[fresh]
    assert "bad-attr" not in events


# --------------------------------------------------------------------------- every hop


def test_every_delivery_retry_reply_and_dead_letter_carries_the_publishers_trace(
    tmp_path: Path, receivers
) -> None:  # type: ignore[no-untyped-def]
    def flaky(r: Request) -> Reply:
        return Reply(503) if r.headers.get("evroute-attempt") == "1" else Reply(200)

    def replier(r: Request) -> Reply:
        if r.headers.get("ce-type") != "order.placed":
            return Reply(200)
        headers, body = to_binary(make_event(type="order.reserved", source="/inventory", id="res-1"))
        return Reply(200, body, headers)

    plain = receivers()
    retried = receivers(flaky)
    replying = receivers(replier)
    failing = receivers(lambda r: Reply(400))
    sink = receivers()
    rs = routes_of(
        tmp_path,
        f"""
        routes:
          - name: plain
            filter: {{type: order.placed}}
            subscriber: {plain.url}/
          - name: structured
            filter: {{type: order.placed}}
            subscriber: {plain.url}/structured
            delivery: {{format: json}}
          - name: retried
            filter: {{type: order.placed}}
            subscriber: {retried.url}/
            delivery: {{retry: 2, backoffDelay: 10ms}}
          - name: inventory
            filter: {{type: order.placed}}
            subscriber: {replying.url}/
          - name: shipping
            filter: {{type: order.reserved}}
            subscriber: {plain.url}/shipping
          - name: failing
            filter: {{type: order.placed}}
            subscriber: {failing.url}/
            delivery: {{retry: 0, deadLetterSink: {sink.url}/dls}}
        """,
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    state = "rojo=00f067aa0ba902b7"
    event = make_event(
        type="order.placed", source="/shop", id="o-1", extensions={"traceparent": PARENT, "tracestate": state}
    )
    publish_event(db, str(tmp_path / "none.yaml"), "default", event)
    drain(db, rs)

    by_path = {r.path: r for r in plain.requests}
    binary = by_path["/"]
    assert (binary.headers["traceparent"], binary.headers["tracestate"]) == (PARENT, state)
    assert binary.headers["ce-traceparent"] == PARENT and binary.headers["ce-tracestate"] == state
    structured = by_path["/structured"]
    assert structured.headers["traceparent"] == PARENT
    assert json.loads(structured.body)["traceparent"] == PARENT
    assert [r.headers["evroute-attempt"] for r in retried.requests] == ["1", "2"]
    assert all(r.headers["traceparent"] == PARENT for r in retried.requests)
    assert replying.requests[0].headers["traceparent"] == PARENT

    # The reply: same trace, a child (its own span id), the tracestate handed on.
    shipped = by_path["/shipping"]
    assert shipped.headers["ce-id"] == "res-1"
    reply_parent = shipped.headers["ce-traceparent"]
    assert trace_id(reply_parent) == TRACE_ID and reply_parent != PARENT
    assert shipped.headers["traceparent"] == reply_parent and shipped.headers["tracestate"] == state

    # The dead letter and its forward to the dead-letter sink.
    [dls] = sink.requests
    assert dls.headers["traceparent"] == PARENT and dls.headers["ce-traceparent"] == PARENT
    assert dls.headers["ce-knativeerrorcode"] == "400"


def test_a_reply_already_in_the_trace_keeps_its_own_span(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    own = f"00-{TRACE_ID}-1111111111111111-01"

    def replier(r: Request) -> Reply:
        if r.headers.get("ce-type") != "a":
            return Reply(200)
        reply = make_event(type="b", source="/r", id="b-1", extensions={"traceparent": own})
        headers, body = to_binary(reply)
        return Reply(200, body, headers)

    sub = receivers(replier)
    rs = routes_of(tmp_path, f"routes:\n  - name: all\n    subscriber: {sub.url}/\n")
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    publish_event(
        db, str(tmp_path / "none.yaml"), "default", make_event(type="a", extensions={"traceparent": PARENT})
    )
    drain(db, rs)
    assert [r.headers["ce-traceparent"] for r in sub.requests] == [PARENT, own]


def test_command_subscriber_gets_the_trace_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    (tmp_path / "handler.py").write_text(
        "import json, os, sys\n"
        "event = json.load(sys.stdin)\n"
        f"open({str(out)!r}, 'w').write(json.dumps([os.environ.get('TRACEPARENT'), os.environ.get('TRACESTATE'), event.get('traceparent')]))\n"
    )
    rs = routes_of(
        tmp_path, f"routes:\n  - name: audit\n    subscriber: {{command: [{sys.executable}, handler.py]}}\n"
    )
    db = str(tmp_path / "ev.db")
    prepare(db, rs)
    event = make_event(type="a", extensions={"traceparent": PARENT, "tracestate": "a=b"})
    publish_event(db, str(tmp_path / "none.yaml"), "default", event)
    drain(db, rs)
    assert json.loads(out.read_text()) == [PARENT, "a=b", PARENT]


# --------------------------------------------------------------------------- nothing loaded when off


def test_a_plain_publish_loads_nothing_of_opentelemetry(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from evroute.cli import main
        try:
            main(["--db", {str(tmp_path / "ev.db")!r}, "--routes", {str(tmp_path / "r.yaml")!r}, "publish", "--type", "a"])
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "google.protobuf", "evroute.otlp"))))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert "stored" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_stored_reply_and_event_round_trip_through_json() -> None:
    event = make_event(type="a", extensions={"traceparent": PARENT, "tracestate": "a=b"})
    from evroute.cloudevent import to_json

    assert from_json(to_json(event)) == event


# --------------------------------------------------------------------------- settings.tracing


def test_settings_tracing_endpoint_is_read_and_checked(tmp_path: Path) -> None:
    from evroute.errors import RoutesInvalid
    from evroute.routes.load import load_routes_text

    good = load_routes_text("settings:\n  tracing: {endpoint: 'http://collector:4318'}\n", "routes.yaml")
    assert good.settings.tracing_endpoint == "http://collector:4318"
    assert load_routes_text("settings: {durability: full}\n", "routes.yaml").settings.tracing_endpoint is None
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text("settings:\n  tracing: {endpoint: 'collector:4318', sampler: x}\n", "routes.yaml")
    problems = [p.split(": ", 1)[1] for p in caught.value.problems]
    assert any("unknown key 'sampler'" in p for p in problems), problems
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text("settings:\n  tracing: {endpoint: 'collector:4318'}\n", "routes.yaml")
    assert "is not an absolute http(s) URI" in caught.value.problems[0]


def test_the_endpoint_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tracing.endpoint(None) is None
    assert tracing.endpoint("http://file:4318") == "http://file:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")
    assert tracing.endpoint("http://file:4318") == "http://env:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/v1/traces")
    assert tracing.endpoint(None) == "http://env:4318/v1/traces"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.endpoint("http://file:4318") is None


def test_a_command_never_inherits_the_workers_own_trace() -> None:
    from evroute.delivery.command import command_environment

    event = make_event(type="a")
    base = {"PATH": "/bin", "TRACEPARENT": PARENT, "TRACESTATE": "a=b"}
    env = command_environment(event, route="r", broker="default", attempt=1, base=base)
    assert "TRACEPARENT" not in env and "TRACESTATE" not in env
    mine = f"00-{TRACE_ID}-1111111111111111-01"
    env = command_environment(
        event, route="r", broker="default", attempt=1, base=base, trace={"traceparent": mine}
    )
    assert env["TRACEPARENT"] == mine and "TRACESTATE" not in env


def test_trace_ids_come_from_a_pool_that_a_forked_child_does_not_share() -> None:
    import os
    import sys

    from evroute import tracing as tr

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return
    first = {tr.new_traceparent() for _ in range(1000)}  # spans several refills of the pool
    assert len(first) == 1000 and all(tr.parse(t) is not None for t in first)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the ids the parent still holds must not come out here
        try:
            os.write(write, tr.new_traceparent().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != tr.new_traceparent() and tr.parse(child) is not None
