"""Knative's filters, compiled once into closures (knative/eventing ``pkg/eventfilter``).

- ``filter`` (Trigger ``spec.filter.attributes``): every key present and equal; ``""`` means
  present and non-empty.
- ``filters`` (SubscriptionsAPI): a list read as ``all``; each item has one dialect:
  ``exact`` / ``prefix`` / ``suffix`` (a map of one or more attributes, every one must match;
  a missing attribute never matches), ``all``, ``any``, ``not``, ``cesql`` and ``cel`` (CEL over
  attributes and JSON data, :mod:`evroute.filters.cel`).
- Empty expressions are Knative's "no filter": ``{}``, ``not: {}``, ``all: []``, ``any: []``
  (and an empty ``exact`` / ``prefix`` / ``suffix`` map or ``cesql: ""``). Knative leaves them out of the list
  they stand in, so they count for nothing inside ``all`` / ``any``; a ``filters`` list holding
  nothing else lets every event through.

String matching is case-sensitive. Attribute values that are not strings (integer and boolean
extensions) are compared by their text, as in the HTTP binding: ``true``, ``false``, ``42``.

:func:`check` validates the plain data a routes file holds and returns every problem with its
path inside the route, so the loader can point at the line; :func:`compile_filters` builds a
:class:`~evroute.filters.matcher.Matcher` whose ``matches`` is a chain of closures built once
(no dict walking per event) and whose ``explain`` names the part that failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evroute.errors import CesqlParseError, InvalidInput
from evroute.filters.cesql import Expression, parse
from evroute.filters.matcher import Matcher, match_all

Attrs = Mapping[str, object]
Match = Callable[[Attrs], bool]
Explain = Callable[[Attrs], str | None]

DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql", "cel")
STRING_DIALECTS = ("exact", "prefix", "suffix")
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*\Z")  # \Z: `$` would pass a trailing newline
NAME_RULE = "allowed: lowercase letters and digits, starting with a letter"


@dataclass(frozen=True, slots=True)
class FilterProblem:
    """One problem in a filter: ``path`` is relative to the route (``("filters", 1, "prefix")``)."""

    path: tuple[str | int, ...]
    message: str
    key: bool = False  # the problem is the key at ``path`` itself, not its value


def as_text(value: object) -> str:
    """An attribute value as text, the way the HTTP binding writes it."""
    if value.__class__ is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _scalar_text(value: object) -> str | None:
    """A filter value written in YAML as text (``5`` and ``true`` are read as text too)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return as_text(value)
    return None


# --------------------------------------------------------------------------- validation


def check(filter: object, filters: object) -> list[FilterProblem]:
    """Every problem in a route's ``filter`` and ``filters``, as written in the routes file."""
    problems: list[FilterProblem] = []
    if filter is not None:
        if not isinstance(filter, Mapping):
            problems.append(FilterProblem(("filter",), "must be a mapping of attribute: value"))
        else:
            for name, value in filter.items():
                problems += _check_pair(("filter", name), name, value, empty_ok=True)
    if filters is not None:
        if not isinstance(filters, list):
            problems.append(FilterProblem(("filters",), "must be a list of filter expressions"))
        else:
            for i, item in enumerate(filters):
                problems += _check_item(("filters", i), item)
    return problems


def _check_pair(
    path: tuple[str | int, ...], name: object, value: object, empty_ok: bool
) -> list[FilterProblem]:
    out = []
    if not isinstance(name, str) or name == "":
        out.append(FilterProblem(path, "empty attribute name (allowed: a CloudEvents attribute name)", True))
    elif not ATTRIBUTE_NAME.match(name):
        out.append(FilterProblem(path, f"attribute name '{name}' is invalid ({NAME_RULE})", True))
    text = _scalar_text(value)
    if text is None:
        hint = '; "" matches any non-empty value' if empty_ok else ""
        out.append(FilterProblem(path, f"value of '{name}' must be text, got {_kind(value)}{hint}"))
    elif text == "" and not empty_ok:
        out.append(FilterProblem(path, f"empty value for '{name}' (allowed: a non-empty string)"))
    return out


def _check_item(path: tuple[str | int, ...], item: object) -> list[FilterProblem]:
    if item is None or (isinstance(item, Mapping) and not item):
        return []  # Knative's "no filter"
    if not isinstance(item, Mapping):
        return [FilterProblem(path, f"must be one filter expression (allowed: {', '.join(DIALECTS)})")]
    unknown = [k for k in item if k not in DIALECTS]
    if unknown:
        return [
            FilterProblem((*path, k), f"unknown filter dialect '{k}' (allowed: {', '.join(DIALECTS)})", True)
            for k in unknown
        ]
    if len(item) > 1:
        return [
            FilterProblem(
                path,
                f"more than one dialect in one filter: {', '.join(item)} "
                "(allowed: exactly one per item; combine them with all: [...])",
            )
        ]
    dialect, body = next(iter(item.items()))
    where = (*path, dialect)
    if dialect in STRING_DIALECTS:
        if body is None:
            return []
        if not isinstance(body, Mapping):
            return [FilterProblem(where, "must be a map of attribute: value, like {type: order.placed}")]
        return [p for name, value in body.items() for p in _check_pair((*where, name), name, value, False)]
    if dialect in ("all", "any"):
        if body is None:
            return []
        if not isinstance(body, list):
            return [FilterProblem(where, "must be a list of filter expressions")]
        return [p for i, sub in enumerate(body) for p in _check_item((*where, i), sub)]
    if dialect == "not":
        return _check_item(where, body)
    if body is None or body == "":
        return []  # Knative: a missing expression is no filter
    if dialect == "cel":
        from evroute.filters import cel  # cel-python loads only for routes that use CEL

        problem = cel.check(body)
        return [] if problem is None else [FilterProblem(where, problem)]
    if not isinstance(body, str) or not body.strip():
        return [FilterProblem(where, "must be a CloudEvents SQL expression (text)")]
    try:
        parse(body)
    except CesqlParseError as exc:
        return [FilterProblem(where, f"{exc.message} (allowed: CloudEvents SQL v1)")]
    return []


def empty_expressions(filters: Sequence[Any] | None) -> list[tuple[str | int, ...]]:
    """Where a valid ``filters`` list holds Knative's "no filter" (``{}``, ``not: {}``,
    ``all: []``, ...), for ``routes check`` to note: each lets every event through."""
    found: list[tuple[str | int, ...]] = []

    def walk(path: tuple[str | int, ...], item: Any) -> None:
        if not item:
            found.append(path)
            return
        dialect, body = next(iter(item.items()))
        if not body:
            found.append((*path, dialect))
        elif dialect in ("all", "any"):
            for i, sub in enumerate(body):
                walk((*path, dialect, i), sub)
        elif dialect == "not":
            walk((*path, "not"), body)

    for i, item in enumerate(filters or ()):
        walk(("filters", i), item)
    return found


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# --------------------------------------------------------------------------- compilation


class _Part:
    """A compiled filter expression: the hot ``match``, its ``explain`` and a description."""

    __slots__ = ("describe", "explain", "match")

    def __init__(self, match: Match, explain: Explain, describe: str) -> None:
        self.match = match
        self.explain = explain
        self.describe = describe


def compile_filters(filter: Mapping[str, str], filters: Sequence[Any]) -> Matcher:
    """The matcher of a route: ``filters`` when non-empty (it overrides ``filter``, as in
    Knative), else ``filter``, else every event. Raises InvalidInput on a malformed filter."""
    problems = check(filter or None, list(filters) if filters else None)
    if problems:
        first = problems[0]
        where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in first.path).replace(".[", "[")
        raise InvalidInput(f"{where}: {first.message}")
    if filters:
        parts = _present_parts(filters, "filters")
        if not parts:  # only Knative "no filter" expressions: every event
            return match_all()
        top = _all(parts, "filters")
        return Matcher(
            top.match, top.explain, ", ".join(p.describe for p in parts), needs_event=_uses_cel(filters)
        )
    if filter:
        part = _attributes({k: _scalar_text(v) or "" for k, v in filter.items()})
        return Matcher(part.match, part.explain, part.describe)
    return match_all()


def _attributes(wanted: Mapping[str, str]) -> _Part:
    checks = [(k, _present(k) if v == "" else _equals(k, v)) for k, v in wanted.items()]
    tests = [fn for _, fn in checks]

    def explain(a: Attrs) -> str | None:
        for (name, fn), want in zip(checks, wanted.values(), strict=True):
            if not fn(a):
                got = a.get(name)
                seen = "attribute missing" if got is None else f"got {as_text(got)!r}"
                if want == "":
                    return f"filter {name}: expected a non-empty value, {seen}"
                return f"filter {name}: expected {want!r}, {seen}"
        return None

    describe = ", ".join(f"{k}={v}" if v else f"{k} exists" for k, v in wanted.items())
    return _Part(_and(tests), explain, describe)


def _present(name: str) -> Match:
    def match(a: Attrs) -> bool:
        value = a.get(name)
        return value is not None and value != ""

    return match


def _equals(name: str, want: str) -> Match:
    def match(a: Attrs) -> bool:
        value = a.get(name)
        if value.__class__ is str:
            return value == want
        return value is not None and as_text(value) == want

    return match


def _startswith(name: str, want: str) -> Match:
    def match(a: Attrs) -> bool:
        value = a.get(name)
        if value.__class__ is str:
            return value.startswith(want)
        return value is not None and as_text(value).startswith(want)

    return match


def _endswith(name: str, want: str) -> Match:
    def match(a: Attrs) -> bool:
        value = a.get(name)
        if value.__class__ is str:
            return value.endswith(want)
        return value is not None and as_text(value).endswith(want)

    return match


_STRING_MATCHERS: dict[str, Callable[[str, str], Match]] = {
    "exact": _equals,
    "prefix": _startswith,
    "suffix": _endswith,
}


def _present_parts(items: Sequence[Any], label: str) -> list[_Part]:
    """The compiled items of a list, leaving out Knative's "no filter" ones, as Knative does."""
    parts = (_compile_item(item, f"{label}[{i}]") for i, item in enumerate(items))
    return [p for p in parts if p is not None]


def _string_part(dialect: str, name: str, want: str, label: str) -> _Part:
    match = _STRING_MATCHERS[dialect](name, want)

    def explain_string(a: Attrs) -> str | None:
        if match(a):
            return None
        got = a.get(name)
        seen = "attribute missing" if got is None else f"got {as_text(got)!r}"
        return f"{label} {dialect} {name}: {want!r}, {seen}"

    sign = {"exact": "=", "prefix": "^=", "suffix": "$="}[dialect]
    return _Part(match, explain_string, f"{name}{sign}{want}")


def _compile_item(item: Mapping[str, Any] | None, label: str) -> _Part | None:
    """The compiled expression, or None for Knative's "no filter" (an empty expression)."""
    if not item:
        return None
    dialect, body = next(iter(item.items()))
    if not body:
        return None  # not: {}, all: [], any: [], exact: {}
    if dialect in _STRING_MATCHERS:
        pairs = [_string_part(dialect, name, _scalar_text(raw) or "", label) for name, raw in body.items()]
        if len(pairs) == 1:
            return pairs[0]
        matches = [p.match for p in pairs]

        def explain_pairs(a: Attrs) -> str | None:
            for pair in pairs:
                why = pair.explain(a)
                if why is not None:
                    return why
            return None

        return _Part(_and(matches), explain_pairs, ", ".join(p.describe for p in pairs))
    if dialect in ("all", "any"):
        parts = _present_parts(body, f"{label}.{dialect}")
        if not parts:
            return None
        return _all(parts, label + " all") if dialect == "all" else _any(parts, label)
    if dialect == "not":
        inner = _compile_item(body, f"{label}.not")
        if inner is None:
            return None
        inner_match = inner.match

        def negated(a: Attrs) -> bool:
            return not inner_match(a)

        def explain_not(a: Attrs) -> str | None:
            return None if not inner_match(a) else f"{label} not: the event matches ({inner.describe})"

        return _Part(negated, explain_not, f"not({inner.describe})")
    if dialect == "cel":
        return _cel(body, label)
    return _cesql(parse(body), label)


def _uses_cel(items: Sequence[Any]) -> bool:
    """True when any item (at any depth) is a ``cel`` expression: the matcher needs the data."""
    for item in items:
        if not isinstance(item, Mapping):
            continue
        for dialect, body in item.items():
            if dialect == "cel":
                return True
            if dialect in ("all", "any") and isinstance(body, list) and _uses_cel(body):
                return True
            if dialect == "not" and _uses_cel([body]):
                return True
    return False


def _cel(source: str, label: str) -> _Part:
    from evroute.filters.cel import compile_cel

    expression = compile_cel(source)

    def explain(a: Attrs) -> str | None:
        why = expression.explain(a)
        return None if why is None else f'{label} cel "{source}" ({why})'

    return _Part(expression.matches, explain, f'cel "{source}"')


def _cesql(expression: Expression, label: str) -> _Part:
    def explain(a: Attrs) -> str | None:
        value, errors = expression.evaluate(a)
        if value is True and not errors:
            return None
        why = errors[0].message if errors else ("false" if value is False else f"{value!r} is not a boolean")
        return f'{label} cesql "{expression.source}" ({why})'

    return _Part(expression.matches, explain, f'cesql "{expression.source}"')


def _and(tests: list[Match]) -> Match:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda a: first(a) and second(a)
    chain = tuple(tests)

    def match(a: Attrs) -> bool:
        # A plain loop: all() over a generator costs a frame per event on the hot path.
        for test in chain:  # noqa: SIM110
            if not test(a):
                return False
        return True

    return match


def _all(parts: list[_Part], label: str) -> _Part:
    def explain(a: Attrs) -> str | None:
        for part in parts:
            why = part.explain(a)
            if why is not None:
                return why
        return None

    describe = "all(" + ", ".join(p.describe for p in parts) + ")"
    return _Part(_and([p.match for p in parts]), explain, describe)


def _any(parts: list[_Part], label: str) -> _Part:
    chain = tuple(p.match for p in parts)

    def match(a: Attrs) -> bool:
        for test in chain:  # noqa: SIM110 - see _and
            if test(a):
                return True
        return False

    def explain(a: Attrs) -> str | None:
        if match(a):
            return None
        whys = "; ".join(str(p.explain(a)) for p in parts)
        return f"{label} any: no alternative matched ({whys})"

    return _Part(match, explain, "any(" + " | ".join(p.describe for p in parts) + ")")
