"""JSONata transforms: a route's ``transform`` and Knative EventTransform documents.

The expression's edge cases run on the compiled transform; load errors through the loader;
deliveries through the real engine to real loopback receivers and a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from evroute.cloudevent import HOPS, make_event, to_dict
from evroute.errors import RoutesInvalid
from evroute.routes.load import load_routes_text
from evroute.store import Store, cursors, deadletters
from evroute.store import log as event_log
from evroute.transform import TransformFailed, jsonata_transform
from evroute.worker.engine import Engine

from receiver import Receiver, Reply

ORDER = make_event(
    type="order.placed",
    source="/shop",
    id="o-1",
    subject="eu-1",
    datacontenttype="application/json",
    data=json.dumps({"order": 1, "amount": 20, "lines": [{"price": 5, "quantity": 2}]}).encode(),
)
KEEP = '{"specversion": "1.0", "id": id, "source": source, "type": type'


def shaped(expression: str, event: Any = ORDER) -> dict[str, Any]:
    return to_dict(jsonata_transform(expression).apply(event))


def failure(expression: str, event: Any = ORDER) -> str:
    with pytest.raises(TransformFailed) as caught:
        jsonata_transform(expression).apply(event)
    return caught.value.reason


# --------------------------------------------------------------------------- the expression


def test_reshapes_attributes_and_data() -> None:
    out = shaped(
        '{"specversion": "1.0", "id": id, "source": source, "type": "order.summary", '
        '"region": $substringBefore(subject, "-"), "data": {"total": $sum(data.lines.(price * quantity))}}'
    )
    assert out == {
        "specversion": "1.0",
        "id": "o-1",
        "source": "/shop",
        "type": "order.summary",
        "region": "eu",
        "datacontenttype": "application/json",
        "data": {"total": 10},
    }


def test_the_whole_event_is_dollar_and_knatives_example_keeps_it_as_data() -> None:
    out = shaped('{"specversion": "1.0", "id": id, "type": "transformed-event", "source": source, "data": $}')
    assert out["data"]["data"] == {"order": 1, "amount": 20, "lines": [{"price": 5, "quantity": 2}]}
    assert out["data"]["type"] == "order.placed" and out["data"]["subject"] == "eu-1"


def test_missing_fields_are_left_out() -> None:
    out = shaped(KEEP + ', "coupon": data.coupon, "data": {"amount": data.amount, "note": data.note}}')
    assert "coupon" not in out
    assert out["data"] == {"amount": 20}


def test_missing_required_attribute_is_an_invalid_cloudevent() -> None:
    assert failure('{"specversion": "1.0", "id": data.nothing, "source": source, "type": type}') == (
        "transform gave an invalid CloudEvent: missing required attribute 'id'"
    )


def test_non_json_data_is_text_or_base64() -> None:
    text = make_event(type="t", source="/s", id="1", datacontenttype="text/plain", data=b"hello")
    out = shaped(KEEP + ', "datacontenttype": "text/plain", "data": $uppercase(data)}', text)
    assert out["data"] == "HELLO" and out["datacontenttype"] == "text/plain"
    raw = make_event(
        type="t", source="/s", id="1", datacontenttype="application/octet-stream", data=b"\x00\x01"
    )
    out = shaped(KEEP + ', "data": {"b64": data_base64, "text": data}}', raw)
    assert out["data"] == {"b64": "AAE="}
    broken = make_event(type="t", source="/s", id="1", datacontenttype="application/json", data=b"{oops")
    assert shaped(KEEP + ', "data": {"b64": data_base64}}', broken)["data"] == {"b64": "e29vcHM="}


def test_results_that_are_not_an_event() -> None:
    assert failure("data.nothing") == "transform gave nothing (every path in the expression was missing)"
    assert failure('"text"') == "transform gave the text 'text', not a CloudEvent object"
    assert failure("[1, 2]") == "transform gave a list, not a CloudEvent object"
    assert failure("42") == "transform gave the number 42, not a CloudEvent object"
    assert failure(KEEP + ', "Bad": 1}').startswith("transform gave an invalid CloudEvent: ")


def test_evaluation_errors_name_the_transform() -> None:
    assert failure('$error("no such order")') == "transform failed: no such order (D3137)"
    assert failure('$number("x")').startswith("transform failed: ")
    assert failure("$unknownfunction(1)").startswith("transform failed: ")
    deep = "($f := function($n) { $n > 0 ? 1 + $f($n - 1) : 0 }; $f(100000))"
    assert failure(deep).startswith("transform failed: ")


def test_hop_count_is_carried_over() -> None:
    hopped = ORDER.with_attributes(**{HOPS: 3})
    assert shaped(KEEP + "}", hopped)[HOPS] == 3
    assert shaped(KEEP + ', "evroutehops": 9}', hopped)[HOPS] == 9


# --------------------------------------------------------------------------- loading


def load(text: str) -> Any:
    return load_routes_text(textwrap.dedent(text), "routes.yaml", env={})


def problems(text: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as caught:
        load(text)
    return caught.value.problems


def test_compile_errors_are_load_errors_at_their_line() -> None:
    assert problems("""\
        routes:
          - name: a
            subscriber: http://h/
            transform:
              jsonata: |
                {
                  "id": id,
                  "type": type +* 1
                }
          - name: b
            subscriber: http://h/
            transform: {jsonata: "{'a': "}
        """) == [
        "routes.yaml:8:28: route 'a': transform.jsonata: JSONata: Expected }, got 1 (S0202) (allowed: a JSONata expression)",
        "routes.yaml:12:33: route 'b': transform.jsonata: JSONata: Expected } before end of expression (S0203) (allowed: a JSONata expression)",
    ]  # fmt: skip


EVENTTRANSFORM = """\
    services:
      ledger: http://127.0.0.1:9/
    ---
    apiVersion: eventing.knative.dev/v1alpha1
    kind: EventTransform
    metadata: {name: summary}
    spec:
      jsonata:
        expression: '{"specversion": "1.0", "id": id, "source": source, "type": "order.summary"}'
      sink: {ref: {apiVersion: v1, kind: Service, name: ledger}, uri: /summary}
    ---
    apiVersion: eventing.knative.dev/v1
    kind: Trigger
    metadata: {name: t}
    spec:
      broker: default
      subscriber:
        ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: summary}
    """


def test_a_trigger_to_an_eventtransform_delivers_to_its_sink() -> None:
    [route] = load(EVENTTRANSFORM).routes
    assert route.subscriber.uri == "http://127.0.0.1:9/summary"
    assert route.transform is not None and route.transform.name == "summary"
    assert not route.transform.reply


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("kind: EventTransform, name: summary}", "kind: EventTransform, name: summery}"), "routes.yaml:18:82: route 't': spec.subscriber.ref.name: EventTransform 'summery' is not defined (add a kind: EventTransform document; known: summary)"),
        (("    expression:", "    expresion:"), "routes.yaml:9:5: EventTransform 'summary': spec.jsonata: unknown key 'expresion' (did you mean 'expression'? allowed: expression)"),
        (("  sink: {ref", "  sinc: {ref"), "routes.yaml:10:3: EventTransform 'summary': spec: unknown key 'sinc' (did you mean 'sink'? allowed: jsonata, sink, reply)"),
        (("  sink: {ref: {apiVersion: v1, kind: Service, name: ledger}, uri: /summary}\n", "  reply: {discard: true}\n"), "routes.yaml:10:10: EventTransform 'summary': spec.reply: reply is set without spec.sink (allowed: reply only with a sink)"),
        (("'{\"specversion\"", "'{{\"specversion\""), "routes.yaml:9:94: EventTransform 'summary': spec.jsonata.expression: JSONata: Expected : before end of expression (S0203) (allowed: a JSONata expression)"),
    ],
)  # fmt: skip
def test_eventtransform_problems(change: tuple[str, str], expected: str) -> None:
    text = textwrap.dedent(EVENTTRANSFORM).replace(*change)
    assert text != textwrap.dedent(EVENTTRANSFORM)
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text(text, "routes.yaml", env={})
    assert expected in caught.value.problems, caught.value.problems


def test_transform_is_lazy_for_publish() -> None:
    """Loading the CLI never imports the JSONata engine; a routes file with a transform does."""
    code = (
        "import sys, evroute.cli, evroute.publish, evroute.routes.load; "
        "assert 'jsonata' not in sys.modules, 'jsonata loaded'; "
        "from evroute.routes.load import load_routes_text; "
        "load_routes_text('routes: [{name: a, subscriber: http://h/}]', 'r.yaml'); "
        "assert 'jsonata' not in sys.modules; "
        "load_routes_text('routes: [{name: a, subscriber: http://h/, transform: {jsonata: id}}]', 'r.yaml'); "
        "assert 'jsonata' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- delivering


def run_engine(tmp_path: Path, text: str, events: list[Any], broker: str = "default") -> tuple[Any, str]:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    routeset = load_routes_text(path.read_text(), str(path))
    db = str(tmp_path / "ev.db")
    with Store(db) as store:
        cursors.ensure(store, [(r.name, r.broker, r.start) for r in routeset.routes])
        event_log.append(store, broker, events)

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
    return routeset, db


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    r = Receiver().start()
    yield r
    r.stop()


def test_route_transform_delivers_the_reshaped_event(tmp_path: Path, receiver: Receiver) -> None:
    run_engine(
        tmp_path,
        f"""\
        routes:
          - name: summary
            subscriber: {receiver.url}/summary
            transform:
              jsonata: |
                {{"specversion": "1.0", "id": id, "source": source, "type": "order.summary",
                  "data": {{"total": data.amount}}}}
        """,
        [ORDER],
    )
    [request] = receiver.requests
    assert request.path == "/summary"
    assert request.headers["ce-type"] == "order.summary" and request.headers["ce-id"] == "o-1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"total": 20}


def test_an_invalid_result_is_a_permanent_failure_naming_the_transform(
    tmp_path: Path, receiver: Receiver
) -> None:
    _, db = run_engine(
        tmp_path,
        f"""\
        apiVersion: eventing.knative.dev/v1alpha1
        kind: EventTransform
        metadata: {{name: broken}}
        spec:
          jsonata: {{expression: '{{"specversion": "1.0", "source": source, "type": type}}'}}
          sink: {{uri: {receiver.url}/never}}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: t}}
        spec:
          broker: default
          delivery: {{retry: 5, backoffDelay: PT0.01S}}
          subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: broken}}}}
        """,
        [ORDER],
    )
    assert receiver.requests == []  # the sink is never called
    with Store(db) as store:
        [letter] = deadletters.listing(store)
    assert (letter.attempts, letter.reason) == (1, "permanent failure")
    assert (
        letter.error == "EventTransform 'broken' gave an invalid CloudEvent: missing required attribute 'id'"
    )
    # The dead letter keeps the event as published, not as transformed.
    assert letter.event.attributes == ORDER.attributes
    assert json.loads(letter.event.data or b"") == json.loads(ORDER.data or b"")


def test_eventtransform_without_sink_replies_into_the_broker(tmp_path: Path, receiver: Receiver) -> None:
    _, db = run_engine(
        tmp_path,
        f"""\
        apiVersion: eventing.knative.dev/v1alpha1
        kind: EventTransform
        metadata: {{name: enrich}}
        spec:
          jsonata:
            expression: |
              {{"specversion": "1.0", "id": id & "-enriched", "source": "/enrich", "type": "order.enriched",
                "data": $merge([data, {{"vip": data.amount > 10}}])}}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: enrich}}
        spec:
          broker: orders
          filter: {{attributes: {{type: order.placed}}}}
          subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: EventTransform, name: enrich}}}}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: vip}}
        spec:
          broker: orders
          filter: {{attributes: {{type: order.enriched}}}}
          subscriber: {{uri: {receiver.url}/vip}}
        """,
        [ORDER],
        broker="orders",
    )
    [request] = receiver.requests
    assert request.headers["ce-id"] == "o-1-enriched" and request.headers["ce-evroutehops"] == "1"
    assert json.loads(request.body)["vip"] is True
    with Store(db) as store:
        stored = event_log.find(store, "o-1-enriched")
        assert [s.broker for s in stored] == ["orders"]
        assert deadletters.listing(store) == []


def test_the_sinks_reply_is_reshaped_or_discarded(tmp_path: Path) -> None:
    def answer(_request: Any) -> Reply:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "r-1",
            "ce-source": "/ledger",
            "ce-type": "ledger.booked",
        }
        return Reply(200, b'{"booked": true}', {**headers, "Content-Type": "application/json"})

    ledger = Receiver(answer).start()
    audit = Receiver().start()
    try:
        run_engine(
            tmp_path,
            f"""\
            apiVersion: eventing.knative.dev/v1alpha1
            kind: EventTransform
            metadata: {{name: book}}
            spec:
              jsonata: {{expression: '$'}}
              sink: {{uri: {ledger.url}/book}}
              reply:
                jsonata: {{expression: '{{"specversion": "1.0", "id": id, "source": source, "type": "order.booked", "data": data}}'}}
            ---
            apiVersion: eventing.knative.dev/v1alpha1
            kind: EventTransform
            metadata: {{name: quiet}}
            spec:
              jsonata: {{expression: '$merge([$, {{"id": id & "-q"}}])'}}
              sink: {{uri: {ledger.url}/quiet}}
              reply: {{discard: true}}
            ---
            apiVersion: eventing.knative.dev/v1
            kind: Trigger
            metadata: {{name: book}}
            spec:
              filter: {{attributes: {{type: order.placed}}}}
              subscriber: {{ref: {{kind: EventTransform, name: book}}}}
            ---
            apiVersion: eventing.knative.dev/v1
            kind: Trigger
            metadata: {{name: quiet}}
            spec:
              filter: {{attributes: {{type: order.placed}}}}
              subscriber: {{ref: {{kind: EventTransform, name: quiet}}}}
            ---
            apiVersion: eventing.knative.dev/v1
            kind: Trigger
            metadata: {{name: audit}}
            spec:
              filters: [{{not: {{exact: {{type: order.placed}}}}}}]
              subscriber: {{uri: {audit.url}/audit}}
            """,
            [ORDER],
        )
        assert sorted(r.path for r in ledger.requests) == ["/book", "/quiet"]
        # Only the reshaped reply of `book` reached the broker; `quiet`'s was dropped.
        assert [(r.headers["ce-type"], r.headers["ce-id"]) for r in audit.requests] == [
            ("order.booked", "r-1")
        ]
        assert json.loads(audit.requests[0].body) == {"booked": True}
    finally:
        ledger.stop()
        audit.stop()


# --------------------------------------------------------------------------- the command line


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from evroute.cli import main

    with CliRunner().isolation() as (out, _err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(tmp_path / "routes.yaml"), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode()


def test_routes_check_and_test_show_the_transform(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(
        textwrap.dedent(EVENTTRANSFORM)
        + textwrap.dedent("""\
        ---
        routes:
          - name: broken
            subscriber: http://127.0.0.1:9/broken
            transform: {jsonata: '{"type": "x"}'}
        """)
    )
    code, out = cli(tmp_path, "routes", "check")
    assert code == 0
    assert "EventTransform summary -> http://127.0.0.1:9/summary" in out
    assert "transform -> http://127.0.0.1:9/broken" in out
    code, out = cli(tmp_path, "routes", "check", "--json")
    shown = {r["name"]: r for r in json.loads(out)["routes"]}
    assert shown["t"]["transform"]["eventTransform"] == "summary"
    assert "transform" in shown["broken"] and "replyIntoBroker" not in shown["broken"]["transform"]

    event = tmp_path / "order.json"
    event.write_text(json.dumps(to_dict(ORDER)))
    code, out = cli(tmp_path, "routes", "test", str(event))
    assert code == 0
    assert "route t: the transformed event:" in out
    assert '"type": "order.summary"' in out
    assert (
        "route broken: transform gave an invalid CloudEvent: missing required attribute 'id' "
        "(a delivery would fail permanently)"
    ) in out
