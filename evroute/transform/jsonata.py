"""JSONata transforms (jsonata-python), as Knative's EventTransform runs them.

The expression sees the event in the CloudEvents JSON format: the attributes at the top level
and ``data`` parsed when the event's data is JSON (text data as a string, other bytes as
``data_base64``), so ``$`` is the whole event and ``data.amount`` reads its data. Its result is
read back the same way: an object whose top-level keys are the new event's attributes and
``data``. Knative's own example keeps the id and source and renames the type::

    {"specversion": "1.0", "id": id, "source": source, "type": "transformed-event", "data": $}

What the result must be, and what becomes of it:

- an object that is a valid CloudEvent (``id``, ``source``, ``type``, ``specversion``, attribute
  names and values as CloudEvents allows); anything else — nothing at all (every path missing),
  a string, a list, an object without ``id`` — fails the attempt permanently, naming the
  transform and why: the same event would fail the same way on every retry;
- ``data`` that is not a string is JSON; when the result says no ``datacontenttype`` it is
  ``application/json``;
- the hop count (``evroutehops``) of the event is carried over when the result leaves it out,
  so a transform cannot reset the reply-loop guard.

An evaluation error (a function given the wrong type, ``$error()``) fails the attempt the same
way. A runaway expression is stopped after one second or 500 nested calls.
"""

from __future__ import annotations

import re
from typing import Any

import jsonata as _jsonata

from evroute.cloudevent import HOPS, CloudEvent, from_dict, to_dict
from evroute.errors import InvalidEvent
from evroute.transform import TransformFailed

TIMEOUT_MS = 1000
MAX_DEPTH = 500


class SyntaxProblem(Exception):
    """An expression that does not compile; ``offset`` is the character it stopped at."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def compile_expression(text: str) -> Any:
    """The compiled expression; raises SyntaxProblem with where it went wrong."""
    try:
        return _jsonata.Jsonata(text)
    except _jsonata.JException as exc:
        offset = max(0, int(getattr(exc, "location", 0) or 0))
        raise SyntaxProblem(_message(exc), min(offset, len(text))) from None
    except (RecursionError, ValueError, TypeError) as exc:  # malformed beyond the parser's own checks
        raise SyntaxProblem(f"{type(exc).__name__}: {exc}", 0) from None


def run(compiled: Any, event: CloudEvent, label: str) -> CloudEvent:
    """``event`` transformed by ``compiled``; raises TransformFailed starting with ``label``."""
    frame = compiled.create_frame()
    frame.set_runtime_bounds(TIMEOUT_MS, MAX_DEPTH)
    try:
        result = compiled.evaluate(to_dict(event), frame)
    except _jsonata.JException as exc:
        raise TransformFailed(f"{label} failed: {_message(exc)}") from None
    except RecursionError:
        raise TransformFailed(f"{label} failed: the expression nests too deeply") from None
    except Exception as exc:  # the engine raises plain Python errors for some bad arguments
        raise TransformFailed(f"{label} failed: {type(exc).__name__}: {exc}") from None
    if result is None:
        raise TransformFailed(f"{label} gave nothing (every path in the expression was missing)")
    if not isinstance(result, dict):
        raise TransformFailed(f"{label} gave {_kind(result)}, not a CloudEvent object")
    obj = dict(result)
    if "data" in obj and not isinstance(obj["data"], str) and obj.get("datacontenttype") is None:
        obj["datacontenttype"] = "application/json"
    if HOPS not in obj and HOPS in event.attributes:
        obj[HOPS] = event.attributes[HOPS]
    try:
        return from_dict(obj)
    except InvalidEvent as exc:
        raise TransformFailed(f"{label} gave an invalid CloudEvent: {exc.message}") from None


def _message(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    code = getattr(exc, "error", None)
    # jsonata-python leaves a trailing "(code)"-less message; add the code JSONata documents.
    return re.sub(r"\s+", " ", f"{text} ({code})" if code and code not in text else text)


def _kind(value: object) -> str:
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return type(value).__name__


__all__ = ["MAX_DEPTH", "TIMEOUT_MS", "SyntaxProblem", "compile_expression", "run"]
