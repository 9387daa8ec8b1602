"""Spans over OTLP/HTTP to a real receiver: an aiohttp server decoding the protobuf
ExportTraceServiceRequest the way a collector does, with real `evroute` processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from receiver import Reply, Request

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

ROOT = Path(__file__).resolve().parents[1]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, object]
    error: bool
    service: str


class Collector:
    """An OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf) on a loopback port."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def traces(request: web.Request) -> web.Response:
            assert request.content_type == "application/x-protobuf"
            message = ExportTraceServiceRequest()
            message.ParseFromString(await request.read())
            found = []
            for rs in message.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attrs: dict[str, object] = {}
                        for a in s.attributes:
                            v = a.value
                            attrs[a.key] = v.int_value if v.HasField("int_value") else v.string_value
                        found.append(
                            Span(
                                s.name,
                                s.kind,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                attrs,
                                s.status.code == 2,
                                resource.get("service.name", ""),
                            )
                        )
            with self.lock:
                self.requests += 1
                self.spans.extend(found)
            return web.Response(
                body=ExportTraceServiceResponse().SerializeToString(),
                content_type="application/x-protobuf",
            )

        async def setup() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/v1/traces", traces)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            return runner

        runner = loop.run_until_complete(setup())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> Collector:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def evroute(
    tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env, PYTHONPATH=str(ROOT), OTEL_BSP_SCHEDULE_DELAY="50")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "evroute",
            "--db",
            str(tmp_path / "ev.db"),
            "--routes",
            str(tmp_path / "routes.yaml"),
            *args,
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_one_event_two_routes_one_retry_is_one_trace(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    def flaky(r: Request) -> Reply:
        return Reply(503) if r.headers.get("evroute-attempt") == "1" else Reply(200)

    a = receivers()
    b = receivers(flaky)
    (tmp_path / "routes.yaml").write_text(
        textwrap.dedent(
            f"""
            routes:
              - name: billing
                subscriber: {a.url}/
              - name: shipping
                subscriber: {b.url}/
                delivery: {{retry: 2, backoffDelay: 20ms}}
            """
        )
    )
    with Collector() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "shop-router"}
        published = evroute(tmp_path, env, "publish", "--type", "order.placed", "--id", "o-1")
        assert published.returncode == 0, published.stderr
        worked = evroute(tmp_path, env, "worker", "--drain")
        assert worked.returncode == 0, worked.stderr
        assert "cannot export" not in worked.stderr + published.stderr
        spans = list(collector.spans)

    assert {s.trace_id for s in spans} == {spans[0].trace_id}, "one trace per event"
    assert {s.service for s in spans} == {"shop-router"}
    [publish] = [s for s in spans if s.name == "publish default"]
    assert publish.kind == PbSpan.SPAN_KIND_PRODUCER and publish.parent_id == ""
    assert publish.attributes["cloudevents.event_id"] == "o-1"
    deliveries = sorted(
        (s for s in spans if s.name.startswith("deliver ")),
        key=lambda s: (s.name, s.attributes["evroute.attempt"]),
    )
    assert [
        (
            s.name,
            s.attributes["evroute.attempt"],
            s.attributes["evroute.status"],
            s.attributes["evroute.outcome"],
            s.error,
        )
        for s in deliveries
    ] == [
        ("deliver billing", 1, 200, "success", False),
        ("deliver shipping", 1, 503, "retriable", True),
        ("deliver shipping", 2, 200, "success", False),
    ]
    assert all(s.kind == PbSpan.SPAN_KIND_CLIENT and s.parent_id == publish.span_id for s in deliveries)
    assert len(spans) == 4
    # Each subscriber saw its own attempt's span as the W3C parent: its spans join the trace there.
    sent = [r.headers["traceparent"] for r in a.requests + b.requests]
    assert sent == [f"00-{publish.trace_id}-{s.span_id}-01" for s in deliveries]
    # The event itself carries the publish span (the CloudEvents extension names the producer).
    assert {r.headers["ce-traceparent"] for r in a.requests + b.requests} == {
        f"00-{publish.trace_id}-{publish.span_id}-01"
    }


def test_ingress_reply_and_dead_letter_spans(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    from evroute.cloudevent import make_event, to_binary

    def replier(r: Request) -> Reply:
        headers, body = to_binary(make_event(type="order.reserved", source="/inv", id="res-1"))
        return Reply(200, body, headers)

    inventory = receivers(replier)
    failing = receivers(lambda r: Reply(400))
    sink = receivers()
    (tmp_path / "routes.yaml").write_text(
        textwrap.dedent(
            f"""
            routes:
              - name: inventory
                filter: {{type: order.placed}}
                subscriber: {inventory.url}/
              - name: shipping
                filter: {{type: order.reserved}}
                subscriber: {failing.url}/
                delivery: {{retry: 0, deadLetterSink: {sink.url}/}}
            """
        )
    )
    with Collector() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        port = closed_port()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evroute",
                "--db",
                str(tmp_path / "ev.db"),
                "--routes",
                str(tmp_path / "routes.yaml"),
                "worker",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
                **env,
                "PYTHONPATH": str(ROOT),
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        try:
            import httpx

            deadline = time.time() + 30
            while True:
                try:
                    response = httpx.post(
                        f"http://127.0.0.1:{port}/",
                        headers={
                            "ce-specversion": "1.0",
                            "ce-id": "o-1",
                            "ce-source": "/shop",
                            "ce-type": "order.placed",
                            "traceparent": PARENT,
                        },
                    )
                    break
                except httpx.ConnectError:
                    assert time.time() < deadline, "the worker's ingress did not start"
                    time.sleep(0.05)
            assert response.status_code == 202
            while not sink.requests or len({s.name for s in collector.spans}) < 6:
                assert time.time() < deadline, [s.name for s in collector.spans]
                time.sleep(0.05)
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
        spans = list(collector.spans)
    assert "Traceback" not in err.decode(), err.decode()
    by_name = {s.name: s for s in spans}
    trace = PARENT.split("-")[1]
    assert {s.trace_id for s in spans} == {trace}
    ingress = by_name["ingress default"]
    assert ingress.kind == PbSpan.SPAN_KIND_SERVER and ingress.parent_id == PARENT.split("-")[2]
    assert ingress.attributes["http.response.status_code"] == 202
    assert by_name["publish default"].parent_id == ingress.span_id
    delivered = by_name["deliver inventory"]
    assert delivered.parent_id == by_name["publish default"].span_id
    reply = by_name["reply default"]
    assert reply.kind == PbSpan.SPAN_KIND_PRODUCER and reply.parent_id == delivered.span_id
    failed = by_name["deliver shipping"]
    assert failed.parent_id == reply.span_id and failed.error
    dead = by_name["dead-letter shipping"]
    assert dead.parent_id == reply.span_id and dead.attributes["evroute.reason"] == "permanent failure"
    forwarded = by_name["dead-letter-sink shipping"]
    assert forwarded.parent_id == reply.span_id and forwarded.attributes["evroute.status"] == 200
    assert sink.requests[0].headers["traceparent"] == f"00-{trace}-{forwarded.span_id}-01"


def test_a_collector_that_is_down_costs_a_log_line_not_deliveries(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    sub = receivers()
    port = closed_port()
    (tmp_path / "routes.yaml").write_text(
        textwrap.dedent(
            f"""
            settings:
              tracing:
                endpoint: http://127.0.0.1:{port}
            routes:
              - name: all
                subscriber: {sub.url}/
            """
        )
    )
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        "".join(f'{{"specversion":"1.0","id":"e-{i}","source":"/s","type":"t"}}\n' for i in range(200))
    )
    started = time.monotonic()
    published = evroute(tmp_path, {}, "publish", "--file", str(lines))
    assert published.returncode == 0, published.stderr
    assert (
        time.monotonic() - started < 15
    )  # a one-shot publish waits about a second for the collector at most
    worked = evroute(tmp_path, {}, "worker", "--drain")
    assert worked.returncode == 0, worked.stderr
    assert sorted(sub.ids()) == sorted(f"e-{i}" for i in range(200))
    assert worked.stderr.count("cannot export spans") == 1, worked.stderr
    assert "Traceback" not in worked.stderr + published.stderr
    assert "Transient error" not in worked.stderr and "Failed to export" not in worked.stderr
