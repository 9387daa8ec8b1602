"""CloudEvents SQL (CESQL) v1: parse an expression once, evaluate it against many events.

::

    >>> from evroute.filters.cesql import parse, compile_filter
    >>> parse("LOWER(type) LIKE 'com.example.%'").evaluate({"type": "Com.Example.Created"})
    (True, [])
    >>> parse("1 / missing").evaluate({})
    (0, [CesqlError(kind='missingAttribute', message="the event has no attribute 'missing'")])
    >>> matches = compile_filter("type = 'x' AND subject LIKE 'eu-%'")
    >>> matches({"type": "x", "subject": "eu-west"})
    True

An event is a mapping of context attribute name to value (``str``, ``int`` or ``bool``);
``specversion``, ``id``, ``source``, ``type``, ``subject``, ``time``, ``datacontenttype``,
``dataschema`` and extensions are all just keys, and event data is not accessible.

The implementation is split in four modules: :mod:`.lexer` (text to tokens),
:mod:`.parser` (tokens to an immutable syntax tree, with the spec's precedence rules),
:mod:`.evaluator` (syntax tree to nested closures, compiled once per expression) and
:mod:`.functions` (types, casts, error values and the built-in functions).

Syntax errors raise :class:`~evroute.errors.CesqlParseError` with a one-line message that
names the column. Evaluation never raises: it returns the value together with the list of
errors (at most one, since evaluation stops at the first error, the spec's fail-fast mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from evroute.errors import CesqlParseError
from evroute.filters.cesql.evaluator import Evaluator, compile_tree
from evroute.filters.cesql.functions import ZERO, Abort, CesqlError, Value
from evroute.filters.cesql.parser import Node, parse_tree


class Expression:
    """A parsed and compiled CESQL expression. Immutable; build it with :func:`parse`."""

    __slots__ = ("_run", "_tree", "_zero", "source")

    source: str
    _tree: Node
    _run: Evaluator
    _zero: Value

    def __init__(self, source: str, tree: Node) -> None:
        run, result_type = compile_tree(tree)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_zero", ZERO[result_type])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def evaluate(self, event: Mapping[str, object]) -> tuple[object, list[CesqlError]]:
        """The expression's value for ``event`` and the errors met (empty when none).

        On an error the value is what the spec defines: the failing operator's own result
        when it is the outermost one (``ABS(-2147483648)`` gives ``2147483647``), otherwise
        the zero value of the expression's type (``false``, ``0`` or ``''``).
        """
        try:
            return self._run(event), []
        except Abort as abort:
            value = abort.value if abort.origin is self._tree else self._zero
            return value, [abort.error]

    def matches(self, event: Mapping[str, object]) -> bool:
        """True only if the expression is Boolean true for ``event`` with no error (spec 1.2)."""
        try:
            return self._run(event) is True
        except Abort:
            return False


def parse(text: str) -> Expression:
    """Parse and compile ``text``; raises CesqlParseError("CESQL: <what> at column N")."""
    if not isinstance(text, str):
        raise CesqlParseError(f"CESQL: expected the expression as text, got {type(text).__name__}")
    return Expression(text, parse_tree(text))


def compile_filter(text: str) -> Callable[[Mapping[str, object]], bool]:
    """A predicate for ``text``, parsed once: true only when the expression evaluates to
    Boolean true without any error, so an event that makes the expression fail (a missing
    attribute, a bad cast, ...) does not match, as in Knative Eventing's CESQL filters."""
    return parse(text).matches


__all__ = ["CesqlError", "CesqlParseError", "Expression", "compile_filter", "parse"]
