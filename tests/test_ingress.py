"""The CloudEvents HTTP ingress against real loopback servers and a real SQLite file:
events from the official CloudEvents SDK and the conformance YAML are stored unchanged, a
corpus of malformed requests gets the right 4xx and stores nothing, and random requests
never get a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingress_server import IngressThread
from prometheus_client.parser import text_string_to_metric_families

from evroute import cloudevent
from evroute.errors import InvalidInput, RuntimeFault, StoreError
from evroute.store import Store
from evroute.store import log as event_log
from evroute.worker.ingress import GroupCommit, make_app, parse_listen, start
from evroute.worker.metrics import Metrics

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
CONFORMANCE = ANCHORS / "cloudevents-conformance" / "yaml"
LIMIT = 4096
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIN = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/shop", "ce-type": "order.placed"}
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def stored(store: Store, broker: str = "default") -> list[event_log.StoredEvent]:
    return event_log.read_after(store, broker, 0, limit=10_000)


def event_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[IngressThread]:
    with IngressThread(tmp_path / "ev.db", max_event_bytes=LIMIT) as srv:
        yield srv


# --------------------------------------------------------------------------- the CloudEvents SDK


def _sdk_events() -> list[Any]:
    from cloudevents.v1.http import CloudEvent as SdkEvent

    base = {"source": "/shop/orders", "type": "order.placed"}
    return [
        SdkEvent(
            {**base, "id": "sdk-json", "subject": "eu-1", "tenant": "acme"}, {"order": 1, "name": "Straße"}
        ),
        SdkEvent(
            {
                **base,
                "id": "sdk-bytes",
                "datacontenttype": "application/octet-stream",
                "dataschema": "https://x/s",
            },
            bytes(range(256)),
        ),
        SdkEvent({**base, "id": "sdk-text", "datacontenttype": "text/plain; charset=utf-8"}, "héllo 🌎"),
        SdkEvent({**base, "id": "sdk-none", "comexampleext": 'a b%c"d'}, None),
    ]


def _expected_data(sdk: Any, body: bytes, structured: bool) -> bytes | None:
    """What evroute must store for the SDK's request: binary mode keeps the body as sent."""
    if not structured:
        return body or None
    data = sdk.get_data()
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and not cloudevent.is_json_type(sdk.get_attributes().get("datacontenttype")):
        return data.encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def test_sdk_events_are_stored_unchanged(tmp_path: Path) -> None:
    from cloudevents.v1.conversion import to_binary, to_structured

    async def main() -> None:
        store = Store(str(tmp_path / "ev.db"))
        metrics = Metrics()
        woken: list[str] = []
        app = make_app(
            store=store, max_event_bytes=1 << 20, token=None, metrics=metrics, on_stored=woken.append
        )
        sent: list[tuple[Any, bytes, str]] = []
        async with TestClient(TestServer(app)) as client:
            for mode, convert in (("binary", to_binary), ("structured", to_structured)):
                for sdk in _sdk_events():
                    headers, body = convert(sdk)
                    # skip_auto_headers: aiohttp would label a bare body application/octet-stream
                    resp = await client.post(
                        f"/{mode}", data=body, headers=headers, skip_auto_headers=["Content-Type"]
                    )
                    assert resp.status == 202, await resp.text()
                    assert await resp.json() == {"stored": 1, "duplicates": 0}
                    sent.append((sdk, body, mode))
        for mode in ("binary", "structured"):
            rows = stored(store, mode)
            ours = [(s, b) for s, b, m in sent if m == mode]
            assert len(rows) == len(ours)
            for row, (sdk, body) in zip(rows, ours, strict=True):
                assert dict(row.event.with_attributes(traceparent=None).attributes) == dict(
                    sdk.get_attributes()
                )
                assert row.event.data == _expected_data(sdk, body, mode == "structured")
        assert woken == ["binary"] * 4 + ["structured"] * 4
        store.close()

    asyncio.run(main())


def test_sdk_reads_what_evroute_sends(ingress: IngressThread) -> None:
    """Stored events, turned back into HTTP by evroute, parse with the SDK to the same event."""
    from cloudevents.core.bindings.http import HTTPMessage
    from cloudevents.core.bindings.http import from_http as core_from_http
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.v1.conversion import to_binary as sdk_to_binary
    from cloudevents.v1.http import from_http as v1_from_http

    def core(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], object]:
        event = core_from_http(HTTPMessage(headers, body), JSONFormat())
        return dict(event.get_attributes()), event.get_data()

    def legacy(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], object]:
        # The 1.x API predates the binding's percent-encoding of header values and leaves it to
        # the caller, so its binary-mode attributes are compared after unquoting.
        event = v1_from_http(headers, body)
        attrs = dict(event.get_attributes())
        if "Content-Type" not in headers or headers["Content-Type"] != cloudevent.STRUCTURED_CT:
            attrs = {k: unquote(v) if isinstance(v, str) else v for k, v in attrs.items()}
        return attrs, event.get_data()

    for sdk in _sdk_events():
        headers, body = sdk_to_binary(sdk)
        assert httpx.post(ingress.url + "/", content=body, headers=headers).status_code == 202
    ext = cloudevent.make_event(
        type="t", id="ext", subject='ü "%20', extensions={"count": 7, "flag": True, "note": "a\nb"}
    )
    headers, body = cloudevent.to_structured(ext)
    assert httpx.post(ingress.url + "/", content=body, headers=headers).status_code == 202
    rows = stored(ingress.store)
    assert len(rows) == 5
    for row in rows:
        ours = row.event
        want = {k: _as_text(v) for k, v in ours.attributes.items()}
        for encode in (cloudevent.to_binary, cloudevent.to_structured):
            headers, body = encode(ours)
            for parse in (core, legacy):
                attrs, data = parse(headers, body)
                got = {k: _as_text(v) for k, v in attrs.items()}
                assert got == want, (encode.__name__, parse.__name__)
                assert _sdk_view(data) == _sdk_view(ours.data), (encode.__name__, parse.__name__)


def _as_text(value: object) -> object:
    """Attribute values as the binding carries them: text, and times as instants."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and cloudevent._parse_time(value) is not None:
        return cloudevent._parse_time(value)
    return value if isinstance(value, datetime) else str(value)


def _sdk_view(data: object) -> object:
    """The SDK decodes data as JSON whenever it parses, whatever the content type; so compare the
    JSON value where there is one and the bytes otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def test_sdk_core_api_events(ingress: IngressThread) -> None:
    """The 2.x core API (cloudevents.core) produces requests the ingress stores as sent."""
    from cloudevents.core.bindings.http import to_binary, to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent as CoreEvent

    for i, convert in enumerate((to_binary, to_structured)):
        attrs = {"id": f"core-{i}", "source": "/core", "type": "t", "specversion": "1.0", "region": "eu"}
        event = CoreEvent(attributes=attrs, data={"n": i})
        message = convert(event, JSONFormat())
        resp = httpx.post(ingress.url + "/core", content=message.body, headers=message.headers)
        assert resp.status_code == 202, resp.text
        (row,) = [r for r in stored(ingress.store, "core") if r.event.id == f"core-{i}"]
        assert row.event.attributes["region"] == "eu"
        assert cloudevent._parse_time(str(row.event.attributes["time"])) == event.get_time()
        assert json.loads(row.event.data or b"") == {"n": i}


# --------------------------------------------------------------------------- conformance YAML


def _conformance_cases() -> list[tuple[str, dict[str, Any]]]:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"CloudEvents conformance YAML not found at {CONFORMANCE}")
    cases = []
    for path in sorted(CONFORMANCE.rglob("*.yaml")):
        # BaseLoader keeps every scalar as written: specversion 1.0 stays "1.0", times stay text.
        for n, doc in enumerate(yaml.load_all(path.read_text(), Loader=yaml.BaseLoader)):
            if doc:
                cases.append((f"{path.relative_to(CONFORMANCE)}#{n}", doc))
    assert cases
    return cases


def test_conformance_yaml_cases_are_accepted(ingress: IngressThread) -> None:
    cases = _conformance_cases()
    posted = 0
    for n, (name, doc) in enumerate(cases):
        attrs = dict(doc["ContextAttributes"])
        attrs.update(attrs.pop("Extensions", None) or {})
        data: str | None = doc.get("Data")
        for mode in [doc["Mode"]] if "Mode" in doc else ["binary", "structured"]:
            broker = f"conf-{n}-{mode}"
            headers = dict(doc.get("TransportExtensions") or {})
            ct = attrs.get("datacontenttype")
            if mode == "binary":
                for key, value in attrs.items():
                    if key == "datacontenttype":
                        headers["Content-Type"] = value
                    else:
                        headers["ce-" + key] = quote(value, safe=_HEADER_SAFE)
                body = (data or "").encode()
            else:
                obj: dict[str, Any] = dict(attrs)
                if data is not None:
                    obj["data"] = json.loads(data) if cloudevent.is_json_type(ct) else data
                headers["Content-Type"] = cloudevent.STRUCTURED_CT
                body = json.dumps(obj).encode()
            resp = httpx.post(f"{ingress.url}/{broker}", content=body, headers=headers)
            assert resp.status_code == 202, f"{name} ({mode}): {resp.text}"
            (row,) = stored(ingress.store, broker)
            assert dict(row.event.with_attributes(traceparent=None).attributes) == attrs, name
            if mode == "binary":
                assert row.event.data == (data.encode() if data else None), name
            elif cloudevent.is_json_type(ct):
                assert json.loads(row.event.data or b"") == json.loads(data or "null"), name
            else:
                assert row.event.data == (data or "").encode(), name
            posted += 1
    assert posted >= len(cases)


# --------------------------------------------------------------------------- accepted requests


def test_brokers_duplicates_batches_and_wakeups(ingress: IngressThread) -> None:
    url = ingress.url
    resp = httpx.post(
        url + "/orders", content=b'{"n":1}', headers={**BIN, "Content-Type": "application/json"}
    )
    assert resp.status_code == 202 and resp.json() == {"stored": 1, "duplicates": 0}
    again = httpx.post(
        url + "/orders", content=b'{"n":2}', headers={**BIN, "Content-Type": "application/json"}
    )
    assert again.status_code == 202 and again.json() == {"stored": 0, "duplicates": 1}
    (row,) = stored(ingress.store, "orders")
    assert row.event.data == b'{"n":1}'  # the first copy wins; a duplicate changes nothing
    # the same (source, id) is a different event in another broker
    assert httpx.post(url + "/", content=b"", headers=BIN).json() == {"stored": 1, "duplicates": 0}
    batch = [
        cloudevent.to_dict(
            cloudevent.make_event(type="t", source="/b", id=f"b-{i}", data=b"x", datacontenttype="text/plain")
        )
        for i in range(3)
    ]
    batch.append(batch[0])
    resp = httpx.post(
        url + "/orders", content=json.dumps(batch), headers={"Content-Type": cloudevent.BATCH_CT}
    )
    assert resp.status_code == 202 and resp.json() == {"stored": 3, "duplicates": 1}
    empty = httpx.post(url + "/orders", content=b"[]", headers={"Content-Type": cloudevent.BATCH_CT})
    assert empty.status_code == 202 and empty.json() == {"stored": 0, "duplicates": 0}
    assert [r.event.id for r in stored(ingress.store, "orders")] == ["e-1", "b-0", "b-1", "b-2"]
    assert ingress.woken == ["orders", "default", "orders"]  # only appends that stored something


def test_healthz_metrics_and_token(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", token=TOKEN) as srv:
        health = httpx.get(srv.url + "/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.head(srv.url + "/healthz").status_code == 200
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert httpx.post(srv.url + "/", headers=BIN).status_code == 401
        ok = httpx.post(srv.url + "/", headers={**BIN, **AUTH})
        assert ok.status_code == 202
        assert httpx.post(srv.url + "/", headers={**BIN, "Authorization": f"bearer {TOKEN}"}).json() == {
            "stored": 0,
            "duplicates": 1,
        }
        metrics = httpx.get(srv.url + "/metrics", headers=AUTH)
        assert metrics.status_code == 200
        assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        samples = [s for s in families["evroute_events_published"].samples if s.name.endswith("_total")]
        assert [(s.labels, s.value) for s in samples] == [({"broker": "default"}, 1.0)]
        assert httpx.post(srv.url + "/metrics", headers=AUTH).headers["Allow"] == "GET, HEAD"


def test_store_failures_are_503_not_500(tmp_path: Path) -> None:
    """A database another process holds locked: publishing and /healthz answer 503, and the
    ingress recovers once the lock is gone."""
    with IngressThread(tmp_path / "ev.db") as srv:
        srv.store.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(tmp_path / "ev.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        resp = httpx.post(srv.url + "/", headers=BIN)
        assert resp.status_code == 503
        assert "nothing was stored" in resp.json()["error"] and "locked" in resp.json()["error"]
        health = httpx.get(srv.url + "/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        other.execute("ROLLBACK")
        other.close()
        assert httpx.post(srv.url + "/", headers=BIN).status_code == 202
        assert httpx.get(srv.url + "/healthz").status_code == 200
        assert srv.woken == ["default"]


def test_group_commit_splits_counts_per_request(tmp_path: Path) -> None:
    """Requests queued in the same loop turn share one transaction, whatever their brokers and
    sizes, and each still gets its own stored/duplicate counts."""

    def ev(i: int) -> cloudevent.CloudEvent:
        return cloudevent.make_event(type="t", source="/g", id=f"g-{i}")

    async def main() -> None:
        store = Store(str(tmp_path / "ev.db"))
        metrics = Metrics()
        woken: list[str] = []
        commit = GroupCommit(store, metrics, woken.append)
        transactions: list[int] = []
        append_each = commit.store.append_each

        async def counted(requests: Any, now: float) -> Any:
            transactions.append(len(requests))
            return await append_each(requests, now)

        commit.store.append_each = counted  # type: ignore[method-assign]
        requests = [
            ("default", [ev(0)]),
            ("default", [ev(0)]),  # the same event twice in one group: stored once
            ("default", [ev(1), ev(2), ev(0)]),
            ("orders", [ev(0)]),  # another broker, another group
            ("default", [ev(i) for i in range(3, 7)]),  # 9 events so far in default: a second group
            ("default", [ev(i) for i in range(10, 22)]),  # 12 events: a group of its own
            ("default", [ev(1), ev(3), ev(30)]),
        ]
        futures = [commit.submit(broker, events) for broker, events in requests]
        answers = await asyncio.gather(*futures)
        assert answers == [(1, 0), (0, 1), (2, 1), (1, 0), (4, 0), (12, 0), (1, 2)]
        assert transactions == [7]  # every request of the turn in one commit
        assert woken == ["default", "orders"]  # one wake-up per broker per flush
        assert [r.event.id for r in stored(store)] == [
            "g-0",
            "g-1",
            "g-2",
            "g-3",
            "g-4",
            "g-5",
            "g-6",
            *[f"g-{i}" for i in range(10, 22)],
            "g-30",
        ]  # in the order the requests came
        got = {f.name: f for f in text_string_to_metric_families(metrics.render()[0].decode())}
        totals = {
            s.labels["broker"]: s.value
            for s in got["evroute_events_published"].samples
            if s.name.endswith("_total")
        }
        assert totals == {"default": 20, "orders": 1}

        # a group that cannot be written: every request in it fails and nothing is stored
        store.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(tmp_path / "ev.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        failing = [commit.submit("default", [ev(40 + i)]) for i in range(3)]
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert all(isinstance(r, StoreError) and "locked" in str(r) for r in results), results
        other.execute("ROLLBACK")
        other.close()
        assert event_log.count_after(store, "default", 0) == 20
        store.close()

    asyncio.run(main())


def test_group_commit_wakes_dispatchers_after_the_commit_and_before_the_answers(tmp_path: Path) -> None:
    """The dispatchers are woken once the events are committed (another connection sees them)
    and run before the requests are answered; a request whose client went away before the
    commit stores nothing."""
    db = str(tmp_path / "ev.db")

    def ev(i: int) -> cloudevent.CloudEvent:
        return cloudevent.make_event(type="t", source="/w", id=f"w-{i}")

    async def main() -> None:
        store = Store(db)
        futures: list[asyncio.Future[tuple[int, int]]] = []
        seen: list[tuple[str, int, list[bool]]] = []
        ran: list[list[bool]] = []
        wake = asyncio.Event()

        def on_stored(broker: str) -> None:
            with Store(db) as other:
                visible = event_log.count_after(other, broker, 0)
            seen.append((broker, visible, [f.done() for f in futures]))
            wake.set()

        async def dispatcher() -> None:
            await wake.wait()
            ran.append([f.done() for f in futures])

        waiting = asyncio.create_task(dispatcher())
        await asyncio.sleep(0)
        commit = GroupCommit(store, Metrics(), on_stored)
        futures += [commit.submit("default", [ev(i)]) for i in range(3)]
        futures[0].cancel()  # the client is gone before the turn ends
        answers = await asyncio.gather(*futures[1:])
        await waiting
        assert answers == [(1, 0), (1, 0)]
        assert seen == [("default", 2, [True, False, False])]  # committed, nobody answered yet
        assert ran == [[True, False, False]]  # the woken dispatcher ran before the answers
        assert [r.event.id for r in stored(store)] == ["w-1", "w-2"]
        store.close()

    asyncio.run(main())


def test_concurrent_requests_over_http(tmp_path: Path) -> None:
    """Many requests in flight at once, half of them duplicates of the other half."""

    async def main() -> None:
        store = Store(str(tmp_path / "ev.db"))
        woken: list[str] = []
        app = make_app(
            store=store, max_event_bytes=LIMIT, token=None, metrics=Metrics(), on_stored=woken.append
        )
        async with TestClient(TestServer(app)) as client:

            async def post(i: int) -> dict[str, int]:
                headers = {**BIN, "ce-id": f"c-{i % 40}"}
                async with client.post("/", data=b"", headers=headers) as resp:
                    assert resp.status == 202
                    answer: dict[str, int] = await resp.json()
                    return answer

            answers = await asyncio.gather(*(post(i) for i in range(80)))
        assert sum(a["stored"] for a in answers) == 40
        assert sum(a["duplicates"] for a in answers) == 40
        assert sorted(r.event.id for r in stored(store)) == sorted(f"c-{i}" for i in range(40))
        assert 1 <= len(woken) <= 40
        store.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- malformed requests


def _structured(obj: object) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": cloudevent.STRUCTURED_CT}, json.dumps(obj).encode()


def _batch(obj: object) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": cloudevent.BATCH_CT}, json.dumps(obj).encode()


GOOD = {"specversion": "1.0", "id": "s-1", "source": "/shop", "type": "order.placed"}


def _without(d: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in d.items() if k != key}


# (name, method, path, headers, body, status, a piece of the error message)
MALFORMED: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    ("binary missing id", "POST", "/", _without(BIN, "ce-id"), b"", 400, "missing required attribute 'id'"),
    ("binary missing source", "POST", "/", _without(BIN, "ce-source"), b"", 400, "'source'"),
    ("binary missing type", "POST", "/", _without(BIN, "ce-type"), b"", 400, "'type'"),
    (
        "binary specversion 0.3",
        "POST",
        "/",
        {**BIN, "ce-specversion": "0.3"},
        b"",
        400,
        'specversion must be "1.0"',
    ),
    ("binary empty id", "POST", "/", {**BIN, "ce-id": ""}, b"", 400, "'id' must be a non-empty string"),
    ("binary bad time", "POST", "/", {**BIN, "ce-time": "yesterday"}, b"", 400, "RFC 3339"),
    (
        "binary ce-datacontenttype",
        "POST",
        "/",
        {**BIN, "ce-datacontenttype": "text/plain"},
        b"x",
        400,
        "ce-datacontenttype",
    ),
    (
        "binary percent-encoded invalid UTF-8",
        "POST",
        "/",
        {**BIN, "ce-subject": "%FF%FE"},
        b"",
        400,
        "header 'ce-subject' is not valid UTF-8",
    ),
    (
        "binary attribute name too long",
        "POST",
        "/",
        {**BIN, "ce-" + "a" * 21: "x"},
        b"",
        400,
        "attribute name",
    ),
    ("binary attribute name with _", "POST", "/", {**BIN, "ce-my_ext": "x"}, b"", 400, "attribute name"),
    (
        "binary bad content type",
        "POST",
        "/",
        {**BIN, "Content-Type": "not a media type"},
        b"x",
        400,
        "'datacontenttype' must be a media type",
    ),
    (
        "binary dataschema not absolute",
        "POST",
        "/",
        {**BIN, "ce-dataschema": "schemas/x"},
        b"",
        400,
        "absolute URI",
    ),
    ("binary body over maxEventBytes", "POST", "/", BIN, b"x" * (LIMIT + 1), 413, "over 4096 bytes"),
    (
        "binary headers push the event over",
        "POST",
        "/",
        {**BIN, "ce-pad": "p" * 200},
        b"x" * (LIMIT - 100),
        413,
        "over maxEventBytes 4096",
    ),
    (
        "structured missing id",
        "POST",
        "/",
        *_structured(_without(GOOD, "id")),
        400,
        "missing required attribute",
    ),
    (
        "structured specversion 2.0",
        "POST",
        "/",
        *_structured({**GOOD, "specversion": "2.0"}),
        400,
        "specversion",
    ),
    (
        "structured specversion number",
        "POST",
        "/",
        *_structured({**GOOD, "specversion": 1.0}),
        400,
        "specversion",
    ),
    (
        "structured bad JSON",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT},
        b'{"id": ',
        400,
        "not valid JSON",
    ),
    (
        "structured empty body",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT},
        b"",
        400,
        "not valid JSON",
    ),
    (
        "structured invalid UTF-8",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT},
        b'{"id": "\xff", "source": "/s", "type": "t", "specversion": "1.0"}',
        400,
        "not valid JSON",
    ),
    ("structured not an object", "POST", "/", *_structured(["x"]), 400, "must be a JSON object"),
    ("structured a string", "POST", "/", *_structured("event"), 400, "must be a JSON object"),
    (
        "structured bad base64",
        "POST",
        "/",
        *_structured({**GOOD, "data_base64": "not base64!"}),
        400,
        "not valid base64",
    ),
    (
        "structured data and data_base64",
        "POST",
        "/",
        *_structured({**GOOD, "data": 1, "data_base64": "AA=="}),
        400,
        "either 'data' or 'data_base64'",
    ),
    (
        "structured with ce- headers",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT, "ce-id": "x"},
        json.dumps(GOOD).encode(),
        400,
        "must not also carry ce- headers",
    ),
    (
        "structured upper-case attribute",
        "POST",
        "/",
        *_structured({**GOOD, "myExt": "x"}),
        400,
        "attribute name 'myExt' is invalid",
    ),
    (
        "structured attribute name too long",
        "POST",
        "/",
        *_structured({**GOOD, "e" * 21: "x"}),
        400,
        "attribute name",
    ),
    (
        "structured attribute name ending in a newline",
        "POST",
        "/",
        *_structured({**GOOD, "abc\n": "x"}),
        400,
        "attribute name 'abc\\n' is invalid",
    ),
    (
        "structured datacontenttype with a line break",
        "POST",
        "/",
        *_structured({**GOOD, "datacontenttype": "text/plain\r\nX-Evil: 1"}),
        400,
        "must be a media type",
    ),
    (
        "structured extension an object",
        "POST",
        "/",
        *_structured({**GOOD, "ext": {"a": 1}}),
        400,
        "must be a string, integer or boolean",
    ),
    ("structured extension out of int32", "POST", "/", *_structured({**GOOD, "ext": 2**31}), 400, "32-bit"),
    (
        "structured lone surrogate",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT},
        b'{"specversion": "1.0", "id": "\\ud800", "source": "/s", "type": "t"}',
        400,
        "not valid UTF-8",
    ),
    (
        "structured event over maxEventBytes",
        "POST",
        "/",
        *_structured({**GOOD, "data": "x" * LIMIT}),
        413,
        "over maxEventBytes",
    ),
    (
        "structured body over 2x",
        "POST",
        "/",
        {"Content-Type": cloudevent.STRUCTURED_CT},
        b" " * (2 * LIMIT + 1),
        413,
        "structured-mode request body is over 8192 bytes",
    ),
    ("batch not an array", "POST", "/", *_batch(GOOD), 400, "must be a JSON array"),
    (
        "batch bad JSON",
        "POST",
        "/",
        {"Content-Type": cloudevent.BATCH_CT},
        b"[{",
        400,
        "batch is not valid JSON",
    ),
    (
        "batch with one bad event",
        "POST",
        "/",
        *_batch([GOOD, {**GOOD, "id": "s-2"}, _without(GOOD, "type")]),
        400,
        "event 2: missing required attribute 'type'",
    ),
    (
        "batch with one oversized event",
        "POST",
        "/",
        *_batch([GOOD, {**GOOD, "id": "big", "data": "x" * LIMIT}]),
        413,
        "event 1: event is",
    ),
    (
        "batch body over 100x",
        "POST",
        "/",
        {"Content-Type": cloudevent.BATCH_CT},
        b" " * (100 * LIMIT + 1),
        413,
        "a batch may be 100 times that",
    ),
    (
        "text/plain without ce- headers",
        "POST",
        "/",
        {"Content-Type": "text/plain"},
        b"hello",
        400,
        "not a CloudEvent",
    ),
    (
        "application/json without ce- headers",
        "POST",
        "/",
        {"Content-Type": "application/json"},
        b"{}",
        400,
        "not a CloudEvent",
    ),
    ("no content type, no ce- headers", "POST", "/", {}, b"", 400, "not a CloudEvent"),
    (
        "another structured format",
        "POST",
        "/",
        {"Content-Type": "application/cloudevents+avro"},
        b"x",
        400,
        "not a CloudEvent",
    ),
    ("upper-case broker", "POST", "/Orders", BIN, b"", 404, "no such path '/Orders'"),
    ("nested path", "POST", "/orders/x", BIN, b"", 404, "no such path"),
    ("broker starting with -", "POST", "/-orders", BIN, b"", 404, "no such path"),
    ("broker name too long", "POST", "/" + "b" * 64, BIN, b"", 404, "at most 63"),
    ("trailing slash", "POST", "/orders/", BIN, b"", 404, "no such path"),
    ("GET on /", "GET", "/", {}, b"", 405, "method GET is not allowed on /"),
    ("PUT on a broker", "PUT", "/orders", BIN, b"", 405, "publish with POST"),
    ("DELETE on /", "DELETE", "/", {}, b"", 405, "not allowed"),
    ("POST on /healthz", "POST", "/healthz", BIN, b"", 405, "not allowed on /healthz"),
]


def test_malformed_requests_get_the_right_4xx_and_store_nothing(tmp_path: Path) -> None:
    assert len(MALFORMED) >= 30
    with IngressThread(tmp_path / "ev.db", token=TOKEN, max_event_bytes=LIMIT) as srv:
        with httpx.Client(base_url=srv.url) as client:
            for name, method, path, headers, body, status, message in MALFORMED:
                resp = client.request(method, path, headers={**headers, **AUTH}, content=body)
                assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text}"
                error = resp.json()["error"]
                assert message in error, f"{name}: {error}"
                if status == 405:
                    assert resp.headers["Allow"] in ("POST", "GET, HEAD"), name
            # tokens: missing, wrong, wrong scheme, empty
            for auth in (
                {},
                {"Authorization": "Bearer nope"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": "Bearer"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                resp = client.post("/", headers={**BIN, **auth})
                assert resp.status_code == 401 and "bearer token" in resp.json()["error"], auth
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            # a chunked body with no Content-Length is counted while it is read
            chunks = (b"x" * 1024 for _ in range(8))
            resp = client.post("/", headers={**BIN, **AUTH}, content=chunks)
            assert resp.status_code == 413
            # a header value that is not UTF-8 at all (raw bytes on the wire)
            head = "".join(f"{k}: {v}\r\n" for k, v in {**BIN, **AUTH}.items()).encode()
            status, answer = srv.raw(
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
                + head
                + b"ce-subject: caf\xe9\r\n\r\n"
            )
            assert status == 400 and b"header 'ce-subject' is not valid UTF-8" in answer
            # duplicate ce- headers
            status, answer = srv.raw(
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
                + head
                + b"ce-id: other\r\n\r\n"
            )
            assert status == 400 and b"appears more than once" in answer
        assert srv.woken == []
    assert event_count(tmp_path / "ev.db") == 0


# --------------------------------------------------------------------------- random requests

_NAMES = st.one_of(
    st.sampled_from(
        ["id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema"]
    ),
    st.text("abcdefghijklmnopqrstuvwxyzABCZ0123456789-_.", min_size=0, max_size=24),
)
_VALUES = st.one_of(
    st.sampled_from(["1.0", "0.3", "", "2018-04-05T03:56:24Z", "%FF", "%E2%82%AC", "/s", "a%"]),
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n\0")),
)
_CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            cloudevent.STRUCTURED_CT,
            cloudevent.BATCH_CT,
            "application/json",
            "text/plain",
            "application/xml",
            "application/cloudevents+json; charset=utf-8",
            "Application/CloudEvents-Batch+JSON",
            "bogus",
        ]
    ),
    st.text("abcdefghijklmnopqrstuvwxyz/+;= -", max_size=30),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _structured_obj(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {k: v for k, v in GOOD.items() if draw(st.booleans()) or draw(st.booleans())}
    obj["id"] = draw(st.text(max_size=6)) if draw(st.booleans()) else f"r-{draw(st.integers(0, 10**6))}"
    obj.update(draw(st.dictionaries(_NAMES.map(lambda s: s.lower() if s else "x"), _JSON, max_size=3)))
    choice = draw(st.integers(0, 3))
    if choice == 1:
        obj["data"] = draw(_JSON)
    elif choice == 2:
        obj["data_base64"] = draw(
            st.one_of(
                st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=10)
            )
        )
    return obj


_Request = tuple[str, list[tuple[bytes, bytes]], bytes]


def _header(name: str, value: str | bytes) -> tuple[bytes, bytes]:
    return b"ce-" + name.encode(), value if isinstance(value, bytes) else value.encode()


@st.composite
def _near_valid(draw: st.DrawFn) -> _Request:
    """Binary or structured mode that is mostly right, so that a good share gets stored."""
    path = draw(st.sampled_from(["/", "/orders", "/x-1"]))
    unique = f"r-{draw(st.integers(0, 10**9))}"
    if draw(st.booleans()):
        obj: dict[str, Any] = {**GOOD, "id": unique}
        obj.update(draw(st.dictionaries(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), _JSON, max_size=3)))
        if draw(st.booleans()):
            obj["data"] = draw(_JSON)
        return path, [(b"Content-Type", cloudevent.STRUCTURED_CT.encode())], json.dumps(obj).encode()
    headers = [(k.encode(), v.encode()) for k, v in {**BIN, "ce-id": unique}.items()]
    extensions = draw(st.dictionaries(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), _VALUES, max_size=3))
    headers.extend(_header(k, v) for k, v in extensions.items() if k not in ("id", "specversion"))
    ct = draw(st.sampled_from([None, "application/json", "text/plain; charset=utf-8", "image/png", "x"]))
    if ct is not None:
        headers.append((b"Content-Type", ct.encode()))
    return path, headers, draw(st.binary(max_size=300))


@st.composite
def _wild(draw: st.DrawFn) -> _Request:
    """Anything: random paths, ce- names and values, content types and bodies."""
    path = draw(st.sampled_from(["/", "/orders", "/x-1", "/Bad", "/a/b", "/healthz", "/metrics", "/%ff"]))
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        base = {**BIN, "ce-id": f"w-{draw(st.integers(0, 10**9))}"}
        headers.extend((k.encode(), v.encode()) for k, v in base.items() if draw(st.integers(0, 5)))
    headers.extend(_header(n, v) for n, v in draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=5)))
    ct = draw(_CONTENT_TYPES)
    if ct is not None:
        headers.append((b"Content-Type", ct.encode()))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        body = draw(st.binary(max_size=300))
    elif kind == 1:
        body = json.dumps(draw(_structured_obj())).encode()
    elif kind == 2:
        body = json.dumps(draw(st.lists(_structured_obj(), max_size=4))).encode()
    else:
        body = draw(_JSON.map(lambda v: json.dumps(v).encode()))
    return path, headers, body


def test_random_requests_never_get_a_5xx(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", max_event_bytes=LIMIT) as srv:
        statuses: set[int] = set()

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.one_of(_near_valid(), _wild()))
        def post(request: _Request) -> None:
            path, headers, body = request
            head = b"".join(k + b": " + v.strip(b" \t") + b"\r\n" for k, v in headers)
            raw = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n".encode()
                + head
                + b"\r\n"
                + body
            )
            status, answer = srv.raw(raw)
            statuses.add(status)
            assert status < 500, answer[:500]
            if status == 202:
                assert json.loads(answer.split(b"\r\n\r\n", 1)[1]).keys() == {"stored", "duplicates"}

        post()
        assert 202 in statuses and 400 in statuses
    with Store(str(tmp_path / "ev.db")) as store:
        rows = [r for b in event_log.brokers(store) for r in event_log.read_after(store, b, 0, 100_000)]
        assert rows
        for row in rows:
            assert cloudevent.validate(row.event.attributes) == dict(row.event.attributes)
            assert row.event.size() <= LIMIT


# --------------------------------------------------------------------------- listening


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("9000") == ("127.0.0.1", 9000)
    assert parse_listen("localhost:1") == ("localhost", 1)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in (
        "",
        "abc",
        "host:",
        "host:0",
        "host:65536",
        "::1:8080",
        "[::1]8080",
        "h:x1",
        "h :80",
        ":-1",
        "１２",
    ):
        with pytest.raises(InvalidInput) as info:
            parse_listen(bad)
        assert info.value.message.startswith(f"--listen {bad!r} is not valid: use HOST:PORT, :PORT or PORT")


def test_start_reports_a_port_in_use(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(str(tmp_path / "ev.db"))

        def app() -> web.Application:
            return make_app(
                store=store, max_event_bytes=LIMIT, token=None, metrics=Metrics(), on_stored=print
            )

        first = await start(app(), "127.0.0.1", 0)
        port = int(first.addresses[0][1])
        try:
            with pytest.raises(RuntimeFault) as info:
                await start(app(), "127.0.0.1", port)
            assert info.value.message.startswith(f"cannot listen on 127.0.0.1:{port}: ")
            assert "in use" in info.value.message.lower()
        finally:
            await first.cleanup()
        store.close()

    asyncio.run(main())
