"""Dapr's publish API on the ingress (``POST /v1.0/publish/<pubsub>/<topic>``) and
``evroute publish --topic``: the CloudEvent Dapr would make, stored in the pubsub's broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from ingress_server import IngressThread

from evroute import cloudevent, tracing
from evroute.cli import main
from evroute.store import Store
from evroute.store import log as event_log


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[IngressThread]:
    with IngressThread(tmp_path / "ev.db", max_event_bytes=4096) as srv:
        yield srv


def stored(srv: IngressThread, broker: str) -> list[dict[str, object]]:
    """The stored events, each checked to carry a valid trace and compared without it (every
    event gets one at the ingress when the request brings none)."""
    out = []
    for e in event_log.read_after(srv.store, broker, 0, limit=100):
        event = cloudevent.to_dict(e.event)
        assert tracing.parse(event.pop("traceparent", None)) is not None
        out.append(event)
    return out


def test_publish_endpoint_wraps_a_json_body_as_dapr_does(ingress: IngressThread) -> None:
    r = httpx.post(
        f"{ingress.url}/v1.0/publish/pubsub/orders",
        content=b'{"orderId": 100, "amount": 120.5}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 204
    assert r.content == b""
    [event] = stored(ingress, "pubsub")
    uuid.UUID(str(event["id"]))
    assert {
        k: event[k] for k in ("specversion", "type", "source", "topic", "pubsubname", "datacontenttype")
    } == {
        "specversion": "1.0",
        "type": "com.dapr.event.sent",
        "source": "Dapr",
        "topic": "orders",
        "pubsubname": "pubsub",
        "datacontenttype": "application/json",
    }
    assert event["data"] == {"orderId": 100, "amount": 120.5}
    assert "time" in event
    assert ingress.woken == ["pubsub"]


def test_publish_endpoint_plain_text_and_no_content_type(ingress: IngressThread) -> None:
    assert httpx.post(f"{ingress.url}/v1.0/publish/pubsub/notes", content=b"hello").status_code == 204
    [event] = stored(ingress, "pubsub")
    assert (event["datacontenttype"], event["data"], event["topic"]) == ("text/plain", "hello", "notes")


def test_publish_endpoint_keeps_a_cloudevent_body_with_topic_from_the_url(ingress: IngressThread) -> None:
    body = {
        "specversion": "1.0",
        "id": "order-7",
        "source": "/shop",
        "type": "order.placed",
        "topic": "wrong",
        "pubsubname": "wrong",
        "tenant": "acme",
        "datacontenttype": "application/json",
        "data": {"amount": 7},
    }
    r = httpx.post(
        f"{ingress.url}/v1.0/publish/pubsub/orders",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert r.status_code == 204
    [event] = stored(ingress, "pubsub")
    assert event == {**body, "topic": "orders", "pubsubname": "pubsub"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        (
            "/v1.0/publish/pubsub/orders",
            b"{not json",
            {"Content-Type": "application/json"},
            400,
            "not valid JSON",
        ),
        (
            "/v1.0/publish/pubsub/orders",
            b"[1]",
            {"Content-Type": "application/cloudevents+json"},
            400,
            "JSON object",
        ),
        (
            "/v1.0/publish/pubsub/orders",
            b'{"specversion": "0.3", "id": "x"}',
            {"Content-Type": "application/cloudevents+json"},
            400,
            "specversion",
        ),
        ("/v1.0/publish/pubsub/orders?metadata.rawPayload=true", b"x", {}, 400, "rawPayload"),
        ("/v1.0/publish/Bad_Name/orders", b"x", {}, 404, "pubsubname"),
        ("/v1.0/publish/pubsub/", b"x", {}, 400, "topic"),
        ("/v1.0/publish/pubsub/orders", b"\xff\xfe", {"Content-Type": "text/plain"}, 400, "UTF-8"),
    ],
)
def test_publish_endpoint_refuses_bad_requests(
    ingress: IngressThread, path: str, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    r = httpx.post(f"{ingress.url}{path}", content=body, headers=headers)
    assert r.status_code == status, r.text
    answer = r.json()
    assert says in answer["message"] and answer["error"] == answer["message"] and answer["errorCode"]
    assert stored(ingress, "pubsub") == []


def test_publish_endpoint_only_takes_post(ingress: IngressThread) -> None:
    r = httpx.get(f"{ingress.url}/v1.0/publish/pubsub/orders")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_publish_endpoint_over_the_size_limit_is_413(ingress: IngressThread) -> None:
    r = httpx.post(f"{ingress.url}/v1.0/publish/pubsub/orders", content=b"x" * 5000)
    assert r.status_code == 413
    assert stored(ingress, "pubsub") == []


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode() + err.getvalue().decode()


def test_cli_publish_topic_sets_what_dapr_sets(tmp_path: Path) -> None:
    code, _ = _cli(tmp_path, "publish", "--broker", "pubsub", "--topic", "orders", "--data", '{"amount": 5}')
    assert code == 0
    code, _ = _cli(tmp_path, "publish", "--topic", "orders", "--type", "order.placed")
    assert code == 0
    with Store(str(tmp_path / "ev.db")) as store:
        [first] = event_log.read_after(store, "pubsub", 0)
        [second] = event_log.read_after(store, "default", 0)
    a = first.event.attributes
    assert (a["type"], a["topic"], a["pubsubname"], a["datacontenttype"]) == (
        "com.dapr.event.sent",
        "orders",
        "pubsub",
        "application/json",
    )
    b = second.event.attributes
    assert (b["type"], b["topic"], b["pubsubname"]) == ("order.placed", "orders", "default")


def test_cli_publish_topic_cannot_go_with_file(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    code, out = _cli(tmp_path, "publish", "--file", str(tmp_path / "e.jsonl"), "--topic", "orders")
    assert code == 2 and "--topic" in out


def test_cli_publish_topic_with_url_names_the_broker_of_the_url(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db") as srv:
        for url, broker in ((f"{srv.url}/", "default"), (f"{srv.url}/pubsub", "pubsub")):
            code, out = _cli(tmp_path, "publish", "--url", url, "--topic", "orders", "--data", "{}")
            assert code == 0, out
            [stored_event] = event_log.read_after(srv.store, broker, 0)
            assert stored_event.event.attributes["pubsubname"] == broker


def test_publish_endpoint_takes_daprs_api_token_header(tmp_path: Path) -> None:
    with IngressThread(tmp_path / "ev.db", token="s3cret-token") as srv:
        url = f"{srv.url}/v1.0/publish/pubsub/orders"
        assert httpx.post(url, content=b"x").status_code == 401
        assert httpx.post(url, content=b"x", headers={"dapr-api-token": "wrong"}).status_code == 401
        assert httpx.post(url, content=b"x", headers={"dapr-api-token": "s3cret-token"}).status_code == 204
        assert (
            httpx.post(url, content=b"x", headers={"Authorization": "Bearer s3cret-token"}).status_code == 204
        )
        # Only on Dapr's API: the CloudEvents paths keep their bearer token.
        assert (
            httpx.post(
                f"{srv.url}/pubsub", content=b"x", headers={"dapr-api-token": "s3cret-token"}
            ).status_code
            == 401
        )
