"""Filter matching: one event against 50 routes with mixed filter dialects (attributes, exact,
prefix, suffix, all, any, not, CESQL), routes compiled once by evroute, against an interpreter
that walks the same filter dicts for every event, measured in the same run.

Data-aware work per event, next to one route's attribute filter on the same event: a JSONata
transform (Knative's EventTransform example plus a computed total), from the stored event to
the CloudEvent that would be delivered.

The reference is a careful interpreter, not a strawman: it uses the same semantics, and its
CESQL expressions are parsed once and looked up by their text (re-parsing per event would
cost far more and measure the parser, not the matching).

A second figure puts a data-aware filter next to the attribute filter: one route, one event
with JSON data, ``filters: [{cel: …}]`` (CEL over attributes and parsed data, as Dapr's rules)
against ``filter: {type: order.placed}``. It has no goal: it tells what CEL costs per event.

    python bench/filters.py [--events 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evroute.cloudevent import make_event
from evroute.filters import as_text, compile_filters
from evroute.filters.cesql import Expression, parse

from bench._common import row, table

EVENT: dict[str, object] = {
    "specversion": "1.0",
    "id": "order-1042",
    "source": "/shop/eu/checkout",
    "type": "order.placed",
    "subject": "eu-west-1",
    "time": "2026-11-26T10:00:00Z",
    "datacontenttype": "application/json",
    "tenant": "acme",
    "priority": 5,
    "express": True,
}


def routes() -> list[tuple[dict[str, str], list[Any]]]:
    """50 routes' (filter, filters), the kinds a real routes file mixes."""
    types = ["order.placed", "order.cancelled", "order.paid", "order.shipped", "payment.failed"]
    out: list[tuple[dict[str, str], list[Any]]] = []
    for i in range(50):
        t = types[i % len(types)]
        kind = i % 10
        if kind in (0, 1, 2):  # Knative attribute filters, the most common
            out.append(({"type": t, "source": "/shop/eu/checkout"} if kind == 1 else {"type": t}, []))
        elif kind == 3:
            out.append(({}, [{"exact": {"type": t}}, {"prefix": {"source": "/shop/"}}]))
        elif kind == 4:
            out.append(({}, [{"suffix": {"source": "/checkout"}}, {"exact": {"tenant": f"t{i}"}}]))
        elif kind == 5:
            out.append(({}, [{"any": [{"exact": {"type": t}}, {"exact": {"type": "order.refunded"}}]}]))
        elif kind == 6:
            out.append(
                ({}, [{"all": [{"prefix": {"type": "order."}}, {"not": {"exact": {"subject": f"us-{i}"}}}]}])
            )
        elif kind == 7:
            out.append(({}, [{"cesql": f"type = '{t}' AND subject LIKE 'eu-%'"}]))
        elif kind == 8:
            out.append(({}, [{"exact": {"type": t}}, {"cesql": "priority > 3 AND express"}]))
        else:
            out.append(({"type": "", "tenant": "acme"}, []))
    return out


# --------------------------------------------------------------------------- the reference


class Interpreter:
    """Walks a route's filter dicts for every event (CESQL parsed once, found by its text)."""

    def __init__(self, specs: list[tuple[dict[str, str], list[Any]]]) -> None:
        self.specs = specs
        self.cesql: dict[str, Expression] = {}
        for _, filters in specs:
            self._collect(filters)

    def _collect(self, items: list[Any]) -> None:
        for item in items:
            for dialect, body in item.items():
                if dialect == "cesql":
                    self.cesql[body] = parse(body)
                elif dialect in ("all", "any"):
                    self._collect(body)
                elif dialect == "not":
                    self._collect([body])

    def matches(self, spec: tuple[dict[str, str], list[Any]], a: Mapping[str, object]) -> bool:
        filt, filters = spec
        if filters:
            return all(self.item(f, a) for f in filters)
        for key, want in filt.items():
            value = a.get(key)
            if (
                value is None
                or (want == "" and as_text(value) == "")
                or (want != "" and as_text(value) != want)
            ):
                return False
        return True

    def item(self, item: Mapping[str, Any], a: Mapping[str, object]) -> bool:
        ((dialect, body),) = item.items()
        if dialect in ("exact", "prefix", "suffix"):
            ((key, want),) = body.items()
            value = a.get(key)
            if value is None:
                return False
            text = as_text(value)
            if dialect == "exact":
                return text == want
            return text.startswith(want) if dialect == "prefix" else text.endswith(want)
        if dialect == "all":
            return all(self.item(f, a) for f in body)
        if dialect == "any":
            return any(self.item(f, a) for f in body)
        if dialect == "not":
            return not self.item(body, a)
        return self.cesql[body].matches(a)


# --------------------------------------------------------------------------- timing


def per_event_us(fn: Any, events: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(events):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / events * 1e6


def run(events: int = 20_000) -> list[dict[str, Any]]:
    specs = routes()
    matchers = [compile_filters(f, fs).matches for f, fs in specs]
    interpreter = Interpreter(specs)
    compiled_result = [m(EVENT) for m in matchers]
    reference_result = [interpreter.matches(s, EVENT) for s in specs]
    assert compiled_result == reference_result, "the two implementations disagree"

    def compiled() -> int:
        return sum(1 for m in matchers if m(EVENT))

    def interpreted() -> int:
        return sum(1 for s in specs if interpreter.matches(s, EVENT))

    ours = per_event_us(compiled, events)
    ref = per_event_us(interpreted, events)
    print(
        f"  {sum(compiled_result)} of {len(specs)} routes match; compiled {ours:.1f} µs/event, "
        f"interpreted {ref:.1f} µs/event",
        file=sys.stderr,
    )
    cel_us, attr_us = cel_against_attributes(max(events // 10, 500))
    return [
        row(
            "filter matching, 1 event x 50 routes (µs/event)",
            ours,
            ref,
            "µs",
            "< 1.0x interpreted",
            ours < ref,
        ),
        row("CEL filter vs attribute filter, 1 route (µs/event)", cel_us, attr_us, "µs", "—", True),
        *data_aware(events // 4),
    ]


TRANSFORM = """{
  "specversion": "1.0",
  "id": id,
  "type": "order.summary",
  "source": source,
  "subject": subject,
  "data": {"order": data.order, "total": $sum(data.lines.(price * quantity)), "original": $}
}"""


def data_aware(events: int) -> list[dict[str, Any]]:
    """µs per event of a JSONata transform, beside one route's attribute filter."""
    from evroute.transform import jsonata_transform

    event = make_event(
        type="order.placed",
        source="/shop/eu/checkout",
        subject="eu-west-1",
        datacontenttype="application/json",
        data=b'{"order": 1042, "lines": [{"sku": "A", "price": 12.5, "quantity": 2}, '
        b'{"sku": "B", "price": 5, "quantity": 1}]}',
    )
    attributes = dict(event.attributes)
    match = compile_filters({"type": "order.placed"}, []).matches
    transform = jsonata_transform(TRANSFORM)
    assert match(attributes) and transform.apply(event).type == "order.summary"
    attribute_us = per_event_us(lambda: match(attributes), events * 20)
    transform_us = per_event_us(lambda: transform.apply(event), events)
    print(
        f"  attribute filter {attribute_us:.2f} µs/event, JSONata transform {transform_us:.1f} µs/event",
        file=sys.stderr,
    )
    return [
        row(
            "JSONata transform per event (µs), vs one attribute filter",
            transform_us,
            attribute_us,
            "µs",
            "(informs docs/performance.md)",
            True,
        )
    ]


CEL = "event.type == 'order.placed' && event.data.amount > 100 && event.data.customer.tier == 'gold'"


def cel_against_attributes(events: int) -> tuple[float, float]:
    """µs per event: a CEL filter reading JSON data, and the attribute filter, on one event."""
    import json

    event = make_event(
        type="order.placed",
        source="/shop/eu/checkout",
        data=json.dumps(
            {"order": 1042, "amount": 129.5, "customer": {"id": "c-7", "tier": "gold"}, "items": [1, 2, 3]}
        ).encode(),
        datacontenttype="application/json",
        extensions={"tenant": "acme", "topic": "orders"},
    )
    cel = compile_filters({}, [{"cel": CEL}]).matches_event
    attributes = compile_filters({"type": "order.placed"}, []).matches_event
    assert cel(event) and attributes(event)
    cel_us = per_event_us(lambda: cel(event), events)
    attr_us = per_event_us(lambda: attributes(event), events * 10)
    print(f"  CEL filter {cel_us:.1f} µs/event, attribute filter {attr_us:.2f} µs/event", file=sys.stderr)
    return cel_us, attr_us


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    print(table(run(parser.parse_args().events)))
