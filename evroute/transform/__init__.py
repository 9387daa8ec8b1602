"""Transforms: a route reshapes each event before it is delivered.

A route's ``transform: {jsonata: EXPR}``, or a Knative ``EventTransform`` document a Trigger
points at, becomes a :class:`Transform`. Its expression runs on the event's structured JSON
(attributes at the top, ``data`` parsed when it is JSON) and must yield a valid CloudEvent;
anything else makes the attempt a permanent failure whose reason names the transform.

This module imports nothing heavy: the JSONata engine (:mod:`evroute.transform.jsonata`) is
loaded only when a routes file holds a transform, so ``evroute publish`` never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent


class TransformFailed(Exception):
    """The transform could not turn this event into a valid CloudEvent; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transform:
    """A compiled JSONata transform of one route.

    ``label`` names it in failures (``transform`` for a route's own, ``EventTransform 'x'``).
    ``reply``: the transformed event is not delivered anywhere but published back into the
    route's broker as a reply (an EventTransform without ``spec.sink``). ``reply_expression``
    reshapes the sink's reply (``spec.reply.jsonata``); ``discard_reply`` drops it
    (``spec.reply.discard: true``).
    """

    expression: str
    label: str = "transform"
    name: str | None = None  # the EventTransform's metadata.name, when read from one
    reply: bool = False
    reply_expression: str | None = None
    discard_reply: bool = False
    compiled: Any = field(default=None, compare=False, repr=False)
    compiled_reply: Any = field(default=None, compare=False, repr=False)

    def apply(self, event: CloudEvent) -> CloudEvent:
        """The transformed event; raises TransformFailed naming this transform."""
        from evroute.transform.jsonata import run

        return run(self.compiled, event, self.label)

    def apply_to_reply(self, reply: CloudEvent) -> CloudEvent | None:
        """The sink's reply as the broker gets it: dropped, reshaped or as it came."""
        if self.discard_reply:
            return None
        if self.compiled_reply is None:
            return reply
        from evroute.transform.jsonata import run

        return run(self.compiled_reply, reply, f"{self.label} reply")


def jsonata_transform(
    expression: str,
    label: str = "transform",
    *,
    name: str | None = None,
    reply: bool = False,
    reply_expression: str | None = None,
    discard_reply: bool = False,
) -> Transform:
    """A :class:`Transform` with its expressions compiled; raises
    :class:`~evroute.transform.jsonata.SyntaxProblem` on an expression that does not compile."""
    from evroute.transform.jsonata import compile_expression

    return Transform(
        expression=expression,
        label=label,
        name=name,
        reply=reply,
        reply_expression=reply_expression,
        discard_reply=discard_reply,
        compiled=compile_expression(expression),
        compiled_reply=None if reply_expression is None else compile_expression(reply_expression),
    )


__all__ = ["Transform", "TransformFailed", "jsonata_transform"]
