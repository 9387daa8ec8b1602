"""Knative Eventing documents in a routes file: ``eventing.knative.dev/v1`` Trigger and Broker.

A Trigger is read as Knative writes it and becomes a route:

- ``metadata.name`` is the route name; ``spec.broker`` (or ``spec.brokerRef.name``) the broker,
  ``default`` when unset, as ``kn trigger create`` does;
- ``spec.filter.attributes`` and ``spec.filters`` are the route's ``filter`` and ``filters``;
- ``spec.subscriber`` is ``uri`` (absolute), ``ref`` (resolved through ``services:``) or ``ref``
  plus a relative ``uri`` (joined to the ref's URI, as Knative resolves destinations);
- ``spec.delivery`` is the route's delivery; the Broker's ``spec.delivery`` sits under it;
- the annotation ``kafka.eventing.knative.dev/delivery.order: ordered|unordered`` (Knative's Kafka
  broker) sets ``ordering``; ``evroute.dev/paused: "true"`` pauses the route (what
  ``evroute subscribe pause`` writes on a Trigger, since Knative has no paused field) and
  ``evroute.dev/start: earliest|latest`` says where a new route starts.

Anything else in the stream that has an ``apiVersion`` or ``kind`` (a Service, a v1beta1
Trigger, …) is ignored with a note, so a whole manifest file can serve as routes.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evroute.routes.fields import Checker, RawRoute, Where
from evroute.routes.yamltree import Doc

API_VERSION = "eventing.knative.dev/v1"
ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"
PAUSED_ANNOTATION = "evroute.dev/paused"
START_ANNOTATION = "evroute.dev/start"
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
TRIGGER_SPEC_KEYS = ("broker", "brokerRef", "filter", "filters", "subscriber", "delivery")
BROKER_SPEC_KEYS = ("config", "delivery")


def is_knative(data: Mapping[str, Any]) -> bool:
    """True for a Kubernetes-style document (it has ``apiVersion`` or ``kind``)."""
    return "apiVersion" in data or "kind" in data


def kind_of(data: Mapping[str, Any]) -> str | None:
    """``Trigger`` or ``Broker`` for the documents evroute reads, else None."""
    kind = data.get("kind")
    if data.get("apiVersion") == API_VERSION and kind in ("Trigger", "Broker"):
        return str(kind)
    return None


def ignored(checker: Checker, doc: Doc) -> None:
    data = doc.data
    name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), Mapping) else None
    what = f"kind: {data.get('kind')}, apiVersion: {data.get('apiVersion')}"
    named = f"'{name}' " if name else ""
    checker.note(
        Where(doc, ()),
        "",
        f"ignored document {named}({what}); evroute reads {API_VERSION} Trigger and Broker",
    )


def _metadata(checker: Checker, doc: Doc, what: str) -> tuple[str | None, Mapping[str, Any], str]:
    """(name, annotations, scope) of a Trigger or Broker."""
    root = Where(doc, ())
    checker.keys(doc.data, TOP_KEYS, root, "")
    meta = doc.data.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        checker.problem(
            root,
            "",
            f"{what}: metadata.name is required (the {'route' if what == 'Trigger' else 'broker'} name)",
        )
        return None, {}, f"{what} at line {doc.start[0]}: "
    name = meta["name"]
    scope = f"{'route' if what == 'Trigger' else 'broker'} '{name}': "
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        checker.problem(root / "metadata" / "annotations", scope, "must be a mapping of text")
        annotations = {}
    return name, annotations, scope


def read_broker(checker: Checker, doc: Doc) -> tuple[str, Where, Any, Where] | None:
    """(broker name, where it is named, its raw spec.delivery, where that is) of a Broker."""
    name, _annotations, scope = _metadata(checker, doc, "Broker")
    if name is None:
        return None
    root = Where(doc, ())
    spec = checker.mapping(doc.data.get("spec"), root / "spec", scope, "config, delivery")
    if spec is None:
        return None
    checker.keys(spec, BROKER_SPEC_KEYS, root / "spec", scope)
    if "config" in spec:
        checker.note(
            root / "spec" / "config", scope, "spec.config is ignored (it configures a cluster's broker class)"
        )
    return name, root / "metadata" / "name", spec.get("delivery"), root / "spec" / "delivery"


def read_trigger(checker: Checker, doc: Doc) -> RawRoute | None:
    """A Trigger in routes.yaml vocabulary, with where each part is written."""
    name, annotations, scope = _metadata(checker, doc, "Trigger")
    if name is None:
        return None
    root = Where(doc, ())
    spec_at = root / "spec"
    spec = checker.mapping(doc.data.get("spec"), spec_at, scope, "broker, filter, subscriber, …")
    if spec is None:
        return None
    checker.keys(spec, TRIGGER_SPEC_KEYS, spec_at, scope)
    values: dict[str, Any] = {"name": name}
    at: dict[str, Where] = {"name": root / "metadata" / "name"}

    if "broker" in spec and "brokerRef" in spec:
        checker.problem(spec_at, scope, "both broker and brokerRef are set (allowed: one of them)")
    elif "brokerRef" in spec:
        ref = spec["brokerRef"]
        ref_at = spec_at / "brokerRef"
        if isinstance(ref, Mapping) and checker.keys(
            ref, ("apiVersion", "kind", "name", "namespace"), ref_at, scope
        ):
            values["broker"], at["broker"] = ref.get("name"), ref_at / "name"
        elif not isinstance(ref, Mapping):
            checker.problem(ref_at, scope, "must be {name[, namespace]}")
    elif "broker" in spec:
        values["broker"], at["broker"] = spec["broker"], spec_at / "broker"

    if spec.get("filter") is not None:
        filt = checker.mapping(spec["filter"], spec_at / "filter", scope, "{attributes: {…}}")
        if filt and checker.keys(filt, ("attributes",), spec_at / "filter", scope):
            values["filter"], at["filter"] = filt.get("attributes"), spec_at / "filter" / "attributes"
    for key in ("filters", "subscriber", "delivery"):
        if key in spec:
            values[key], at[key] = spec[key], spec_at / key

    overrides: dict[str, Any] = {}
    ann_at = root / "metadata" / "annotations"
    if ORDER_ANNOTATION in annotations:
        order = checker.choice(
            annotations[ORDER_ANNOTATION],
            ("unordered", "ordered"),
            ann_at / ORDER_ANNOTATION,
            scope,
            "ordering",
        )
        if order is not None:
            overrides["ordering"] = order
    if PAUSED_ANNOTATION in annotations:
        raw = annotations[PAUSED_ANNOTATION]
        values["paused"] = {"true": True, "false": False}.get(raw, raw) if isinstance(raw, str) else raw
        at["paused"] = ann_at / PAUSED_ANNOTATION
    if START_ANNOTATION in annotations:
        values["start"], at["start"] = annotations[START_ANNOTATION], ann_at / START_ANNOTATION
    return RawRoute(values=values, at=at, where=root, scope=scope, overrides=overrides)
