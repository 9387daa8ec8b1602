"""CEL, Dapr's expression language, as a filter dialect (``- cel: "event.data.amount > 100"``).

An expression sees one variable, ``event``: every attribute of the CloudEvent, plus ``data``
parsed from JSON when the event's data is JSON (a JSON ``datacontenttype``, or none), else the
data as text — the structured form Dapr evaluates its routing rules against.

Choices, made to match Dapr (whose CEL is cel-go):

- Numbers compare across int and double (``event.data.amount > 100`` holds for ``150.5``,
  ``== 100`` for ``100.0``): JSON has one number type, and cel-go's heterogeneous comparison
  agrees. cel-python would refuse those comparisons, so they are supplied here.
- An expression is compiled once, when the routes file loads; a syntax error is a load error.
- Evaluating is total: a missing field, a field of non-JSON data, a type mismatch or a result
  that is not a boolean is *no match*, never a crash; :meth:`Cel.explain` says which.

cel-python is imported on first use only: a routes file without CEL never loads it.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

from evroute.cloudevent import CloudEvent, is_json_type
from evroute.filters.matcher import EVENT_KEY  # where a matcher finds the whole event


class CelSyntaxError(Exception):
    """The expression does not compile; ``message`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_ENV: Any = None
_FUNCTIONS: dict[str, Any] | None = None


def _environment() -> tuple[Any, dict[str, Any]]:
    global _ENV, _FUNCTIONS
    if _ENV is None or _FUNCTIONS is None:
        import celpy
        from celpy import celtypes

        numbers = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)

        def relation(op: Callable[[Any, Any], bool], fallback: Any) -> Callable[[Any, Any], Any]:
            def compare(a: Any, b: Any) -> Any:
                if (
                    isinstance(a, numbers)
                    and isinstance(b, numbers)
                    and not isinstance(a, celtypes.BoolType)
                    and not isinstance(b, celtypes.BoolType)
                    and type(a) is not type(b)
                ):
                    # int vs double: plain Python numbers compare an int and a float exactly.
                    return celtypes.BoolType(op(_plain(a), _plain(b)))
                return fallback(a, b)

            return compare

        from celpy import evaluation

        base = evaluation.base_functions
        _FUNCTIONS = {
            "_==_": relation(operator.eq, base["_==_"]),
            "_!=_": relation(operator.ne, base["_!=_"]),
            "_<_": relation(operator.lt, base["_<_"]),
            "_<=_": relation(operator.le, base["_<=_"]),
            "_>_": relation(operator.gt, base["_>_"]),
            "_>=_": relation(operator.ge, base["_>=_"]),
        }
        _ENV = celpy.Environment()
    return _ENV, _FUNCTIONS


def _plain(n: Any) -> int | float:
    return float(n) if isinstance(n, float) else int(n)


def event_view(event: CloudEvent) -> dict[str, Any]:
    """The ``event`` variable: attributes, and ``data`` parsed as Dapr would see it."""
    view: dict[str, Any] = dict(event.attributes)
    raw = event.data
    if raw is not None:
        data: Any
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None:
            data = None
        elif is_json_type(event.datacontenttype) or event.datacontenttype is None:
            try:
                data = json.loads(text)
            except ValueError:
                data = text
        else:
            data = text
        if data is not None:
            view["data"] = data
    return view


class Cel:
    """One compiled CEL expression. Raises CelSyntaxError for one that does not compile."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        env, functions = _environment()
        import celpy

        try:
            ast = env.compile(source)
            self._program = env.program(ast, functions=functions)
        except celpy.CELParseError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
            raise CelSyntaxError(f"CEL does not parse: {first}") from None
        except Exception as exc:  # cel-python raises assorted errors for unsupported forms
            raise CelSyntaxError(f"CEL does not compile: {type(exc).__name__}: {exc}") from None

    def evaluate(self, view: Mapping[str, Any]) -> tuple[bool, str | None]:
        """(matched, why not): why is None when the expression came to ``true``."""
        import celpy
        from celpy import celtypes

        try:
            value = self._program.evaluate({"event": celpy.json_to_cel(dict(view))})
        except Exception as exc:
            return False, _reason(exc)
        if isinstance(value, celtypes.BoolType):
            return (True, None) if bool(value) else (False, "false")
        if isinstance(value, Exception):
            return False, _reason(value)
        return False, f"{value!r} is not a boolean"

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return self.evaluate(view_of(attributes))[0]

    def explain(self, attributes: Mapping[str, object]) -> str | None:
        return self.evaluate(view_of(attributes))[1]


def view_of(attributes: Mapping[str, object]) -> Mapping[str, Any]:
    """The ``event`` variable for a matcher given ``attributes`` (with the event under EVENT_KEY)."""
    event = attributes.get(EVENT_KEY)
    if isinstance(event, CloudEvent):
        return event_view(event)
    return {k: v for k, v in attributes.items() if k != EVENT_KEY}


def _reason(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    text = " ".join(text.split())
    if "no such member" in text or "no such key" in text:
        return f"evaluation error: {text} (a field is missing)"
    return f"evaluation error: {text[:200]}"


@functools.lru_cache(maxsize=512)
def compile_cel(source: str) -> Cel:
    """``source`` compiled; a load validates and then builds, and compiles each text once."""
    return Cel(source)


def check(source: object) -> str | None:
    """None when ``source`` compiles, else the one-line problem (for the routes loader)."""
    if not isinstance(source, str) or not source.strip():
        return "must be a CEL expression (text)"
    try:
        compile_cel(source)
    except CelSyntaxError as exc:
        return exc.message
    return None


__all__ = ["EVENT_KEY", "Cel", "CelSyntaxError", "check", "compile_cel", "event_view", "view_of"]
