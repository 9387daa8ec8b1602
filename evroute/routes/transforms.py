"""Transforms in a routes file: a route's ``transform: {jsonata: EXPR}`` and Knative's
``eventing.knative.dev/v1alpha1`` ``EventTransform`` documents.

An EventTransform is read as Knative writes it::

    apiVersion: eventing.knative.dev/v1alpha1
    kind: EventTransform
    metadata: {name: order-summary}
    spec:
      jsonata:
        expression: |
          {"specversion": "1.0", "id": id, "source": source, "type": "order.summary", "data": $}
      sink: {ref: {apiVersion: v1, kind: Service, name: ledger}}   # optional
      reply: {discard: true}                                           # optional, needs a sink

A Trigger whose ``subscriber.ref`` is ``kind: EventTransform`` delivers the transformed event to
the transform's ``spec.sink``; without a sink the transformed event goes back into the
Trigger's broker as a reply, which is what Knative's Broker does with the transform's
response. ``spec.reply`` reshapes (``jsonata``) or drops (``discard: true``) what the sink
answers, as in Knative. Expressions are compiled when the file loads: one that does not
compile is a load error at its own line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evroute.routes.fields import Checker, Where, show
from evroute.routes.model import Subscriber
from evroute.routes.yamltree import Doc
from evroute.transform import Transform

API_VERSION = "eventing.knative.dev/v1alpha1"
KIND = "EventTransform"
SPEC_KEYS = ("jsonata", "sink", "reply")
EXPRESSION_RULE = "allowed: a JSONata expression"


def is_eventtransform(data: Mapping[str, Any]) -> bool:
    return data.get("kind") == KIND and data.get("apiVersion") == API_VERSION


def refers_to_transform(subscriber: object) -> bool:
    """Whether a Trigger's subscriber is a ``ref`` to an EventTransform."""
    if not isinstance(subscriber, Mapping):
        return False
    ref = subscriber.get("ref")
    return isinstance(ref, Mapping) and ref.get("kind") == KIND


@dataclass(frozen=True, slots=True)
class _Declared:
    transform: Transform
    sink: Subscriber | None
    secrets: frozenset[str]


class Transforms:
    """Reads transforms for one load; ``text`` is the routes file, to place errors in a block."""

    def __init__(self, checker: Checker, text: str) -> None:
        self.c = checker
        self.lines = text.splitlines()
        self.declared: dict[str, _Declared] = {}
        self.broken: set[str] = set()  # declared with problems (already reported)

    # -------------------------------------------------------------- expressions

    def compile(
        self,
        expression: object,
        where: Where,
        scope: str,
        label: str,
        **options: Any,
    ) -> Transform | None:
        from evroute.transform import jsonata_transform
        from evroute.transform.jsonata import SyntaxProblem

        if not isinstance(expression, str) or not expression.strip():
            self.c.problem(where, scope, f"must be a JSONata expression (text), got {show(expression)}")
            return None
        try:
            return jsonata_transform(expression, label, **options)
        except SyntaxProblem as exc:
            self.c.raw(
                self._place(where, expression, exc.offset),
                scope,
                f"{where.label}: JSONata: {exc.message} ({EXPRESSION_RULE})",
            )
            return None

    def _place(self, where: Where, expression: str, offset: int) -> tuple[int, int]:
        """Line and column of character ``offset`` of ``expression`` written at ``where``."""
        line, col = where.pos()
        before = expression[:offset]
        newlines = before.count("\n")
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        block = source[col - 1 : col] in ("|", ">")
        if not block:
            quoted = source[col - 1 : col] in ("'", '"')
            return (line, col + quoted + offset) if newlines == 0 else (line + newlines, 1)
        # A block scalar: the text starts on the next line, indented.
        first = self.lines[line] if line < len(self.lines) else ""
        indent = len(first) - len(first.lstrip(" "))  # the block's indentation, not in its text
        return line + 1 + newlines, indent + len(before) - (before.rfind("\n") + 1) + 1

    def route_transform(self, value: object, where: Where, scope: str) -> Transform | None:
        """A route's ``transform: {jsonata: EXPR}``."""
        body = self.c.mapping(value, where, scope, "jsonata: EXPR")
        if body is None:
            return None
        if not self.c.keys(body, ("jsonata",), where, scope):
            return None
        if "jsonata" not in body:
            self.c.problem(where, scope, "needs jsonata: EXPR (allowed: jsonata)")
            return None
        raw = body["jsonata"]
        if isinstance(raw, Mapping) and list(raw) == ["expression"]:  # EventTransform's spelling
            raw, where = raw["expression"], where / "jsonata" / "expression"
        else:
            where = where / "jsonata"
        return self.compile(raw, where, scope, "transform")

    # -------------------------------------------------------------- EventTransform documents

    def read(self, doc: Doc) -> None:
        c = self.c
        root = Where(doc, ())
        c.keys(doc.data, ("apiVersion", "kind", "metadata", "spec", "status"), root, "")
        meta = doc.data.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str):
            c.problem(root, "", "EventTransform: metadata.name is required (the name Triggers refer to)")
            return
        scope = f"EventTransform '{name}': "
        if c.name(name, root / "metadata" / "name", scope) is None:
            return
        if name in self.declared:
            c.problem(root / "metadata" / "name", scope, "this EventTransform is defined twice (keep one)")
            return
        self.broken.add(name)  # until it reads cleanly
        spec_at = root / "spec"
        spec = c.mapping(doc.data.get("spec"), spec_at, scope, "jsonata, sink, reply")
        if spec is None or not c.keys(spec, SPEC_KEYS, spec_at, scope):
            return
        expression = self._expression(spec.get("jsonata"), spec_at / "jsonata", scope, required=True)
        secrets: set[str] = set()
        sink = None
        if spec.get("sink") is not None:
            sink = c.sink(spec["sink"], spec_at / "sink", scope, secrets)
            if sink is None:
                return
        options: dict[str, Any] = {"name": name, "reply": sink is None}
        if spec.get("reply") is not None:
            options.update(self._reply(spec["reply"], spec_at / "reply", scope, sink is not None))
        if expression is None or options.get("reply_expression") is False:
            return
        where, text = expression
        transform = self.compile(text, where, scope, f"EventTransform '{name}'", **options)
        if transform is not None:
            self.declared[name] = _Declared(transform, sink, frozenset(secrets))
            self.broken.discard(name)

    def _expression(
        self, value: object, where: Where, scope: str, required: bool
    ) -> tuple[Where, object] | None:
        if value is None:
            if required:
                self.c.problem(where, scope, "spec.jsonata.expression is required (the transform to run)")
            return None
        body = self.c.mapping(value, where, scope, "expression: EXPR")
        if body is None or not self.c.keys(body, ("expression",), where, scope):
            return None
        return where / "expression", body.get("expression")

    def _reply(self, value: object, where: Where, scope: str, has_sink: bool) -> dict[str, Any]:
        c = self.c
        failed: dict[str, Any] = {"reply_expression": False}
        body = c.mapping(value, where, scope, "jsonata or discard")
        if body is None or not c.keys(body, ("jsonata", "discard"), where, scope):
            return failed
        if not has_sink:
            c.problem(where, scope, "reply is set without spec.sink (allowed: reply only with a sink)")
            return failed
        discard = c.boolean(body.get("discard", False), where / "discard", scope)
        found = self._expression(body.get("jsonata"), where / "jsonata", scope, required=False)
        if discard and found is not None:
            c.problem(where, scope, "both discard: true and jsonata are set (allowed: one of them)")
            return failed
        if discard is None:
            return failed
        if found is None:
            return {"discard_reply": discard}
        reply_at, text = found
        if not isinstance(text, str) or not text.strip():
            c.problem(reply_at, scope, f"must be a JSONata expression (text), got {show(text)}")
            return failed
        from evroute.transform.jsonata import SyntaxProblem, compile_expression

        try:
            compile_expression(text)
        except SyntaxProblem as exc:
            c.raw(
                self._place(reply_at, text, exc.offset),
                scope,
                f"{reply_at.label}: JSONata: {exc.message} ({EXPRESSION_RULE})",
            )
            return failed
        return {"reply_expression": text}

    def resolve(
        self, subscriber: Mapping[str, Any], where: Where, scope: str, secrets: set[str]
    ) -> tuple[Subscriber, Transform] | None:
        """The sink and transform of a Trigger whose ``subscriber.ref`` is an EventTransform."""
        ref = subscriber["ref"]
        at = where / "ref"
        if not self.c.keys(subscriber, ("ref",), where, scope):
            return None
        if not self.c.keys(ref, ("apiVersion", "kind", "name", "namespace"), at, scope):
            return None
        if ref.get("apiVersion", API_VERSION) != API_VERSION:
            self.c.problem(
                at / "apiVersion", scope, f"an EventTransform is {API_VERSION}, got {show(ref['apiVersion'])}"
            )
            return None
        name = ref.get("name")
        found = self.declared.get(name) if isinstance(name, str) else None
        if found is None and name in self.broken:
            return None  # its own problems are already listed
        if found is None:
            known = ", ".join(sorted(self.declared)) or "none in this file"
            self.c.problem(
                at / "name",
                scope,
                f"EventTransform {show(name)} is not defined (add a kind: EventTransform document; known: {known})",
            )
            return None
        secrets.update(found.secrets)
        return (found.sink or Subscriber()), found.transform
