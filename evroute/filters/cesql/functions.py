"""CESQL runtime: the three value types and how event attributes map to them (spec 3.1,
3.2), the casts between them (3.7), the error values evaluation reports (3.3), LIKE pattern
matching (3.4.3) and the built-in functions (3.5).

Values are plain Python ``bool``, ``int`` (always within 32 bits) and ``str``. Because
``bool`` is a subclass of ``int`` in Python, type tests here and in the evaluator use
``type(v) is int``, never ``isinstance``.

Every cast and function is total: it returns a value *and* an optional :class:`CesqlError`
(the value is the one the spec defines for the error case, usually the zero value of the
result type).
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from evroute.filters.cesql.parser import INT_MAX, INT_MIN

Value = bool | int | str

# Static result types of expressions. ANY is an attribute, whose type is known only at
# run time, or a function parameter that accepts every type.
BOOLEAN: Final = "Boolean"
INTEGER: Final = "Integer"
STRING: Final = "String"
ANY: Final = "Any"

# Zero values (spec 3.1). An expression whose type cannot be known statically (a bare
# attribute, an unknown function) is taken to be Boolean, as spec 3.2 says.
ZERO: Final[dict[str, Value]] = {BOOLEAN: False, INTEGER: 0, STRING: "", ANY: False}

# Error kinds, spelled as the conformance suite (TCK) spells them.
MATH: Final = "math"
CAST: Final = "cast"
MISSING_ATTRIBUTE: Final = "missingAttribute"
MISSING_FUNCTION: Final = "missingFunction"
FUNCTION_EVALUATION: Final = "functionEvaluation"


@dataclass(frozen=True, slots=True)
class CesqlError:
    """One evaluation error: ``kind`` is one of the spec's error types, ``message`` says why."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


Outcome = tuple[Value, CesqlError | None]


class Abort(Exception):
    """Stops an evaluation at its first error (the spec's "fail fast" mode, section 4.1).

    ``value`` is what the failing operator or function itself returns along with
    ``error``; ``origin`` is its syntax-tree node. Every enclosing operator returns the
    zero value of its own type instead, so the caller only needs to know whether the
    failing node is the root of the expression.
    """

    def __init__(self, error: CesqlError, value: Value, origin: object) -> None:
        super().__init__(error.message)
        self.error = error
        self.value = value
        self.origin = origin


def type_name(value: Value) -> str:
    t = type(value)
    return BOOLEAN if t is bool else INTEGER if t is int else STRING


def attribute_value(value: object) -> Value:
    """An event attribute as a CESQL value. Booleans, strings and 32-bit integers are kept;
    anything else is represented by its string form (spec 3.2), using the canonical
    CloudEvents encodings for binary (base64) and timestamps (RFC 3339)."""
    if type(value) is str or type(value) is bool:
        return value
    if type(value) is int and INT_MIN <= value <= INT_MAX:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    return str(value)


# -- casts (spec 3.7) ------------------------------------------------------------------

_INTEGER_TEXT: Final = re.compile(r"([+-]?)0*([0-9]+)")


def to_integer(value: Value) -> tuple[int, CesqlError | None]:
    """Integer cast: base-10 text with an optional sign, or a Boolean as 1 / 0."""
    if type(value) is int:
        return value, None
    if type(value) is bool:
        return (1 if value else 0), None
    assert isinstance(value, str)
    match = _INTEGER_TEXT.fullmatch(value)
    if match is None:
        return 0, CesqlError(CAST, f"cannot cast {value!r} to Integer")
    # Longer digit runs cannot fit; checking first also keeps int() away from huge text.
    if len(match[2]) <= 10:
        number = int(match[1] + match[2])
        if INT_MIN <= number <= INT_MAX:
            return number, None
    return 0, CesqlError(CAST, f"cannot cast {value!r} to Integer: it does not fit in 32 bits")


def to_string(value: Value) -> str:
    """String cast; never fails. Booleans become ``true`` / ``false``."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return str(value)


def to_boolean(value: Value, *, explicit: bool = False) -> tuple[bool, CesqlError | None]:
    """Boolean cast: ``true`` / ``false`` in any letter case, or (explicit only) an Integer.

    The spec's cast table (3.7) allows Integer -> Boolean, but the conformance suite
    expects ``NOT 10`` to report a cast error; evroute therefore accepts an Integer only
    in an explicit ``BOOL(x)`` and treats the implicit cast as an error.
    """
    if type(value) is bool:
        return value, None
    if type(value) is int:
        if explicit:
            return value != 0, None
        return False, CesqlError(CAST, f"cannot implicitly cast Integer {value} to Boolean")
    assert isinstance(value, str)
    lowered = value.lower()
    if lowered == "true":
        return True, None
    if lowered == "false":
        return False, None
    return False, CesqlError(CAST, f"cannot cast {value!r} to Boolean")


def _string_outcome(value: Value) -> Outcome:
    return to_string(value), None


def _boolean_outcome(value: Value) -> Outcome:
    return to_boolean(value)


def _integer_outcome(value: Value) -> Outcome:
    return to_integer(value)


# Implicit cast to the Python type of another value: ``=``, ``!=`` and ``IN`` cast one side
# to the type of the other (spec 3.7, ambiguous binary operators and the IN rule).
CAST_TO_TYPE_OF: Final[dict[type, Callable[[Value], Outcome]]] = {
    str: _string_outcome,
    int: _integer_outcome,
    bool: _boolean_outcome,
}

# Implicit cast to a declared parameter type.
CAST_TO: Final[dict[str, Callable[[Value], Outcome]]] = {
    STRING: _string_outcome,
    INTEGER: _integer_outcome,
    BOOLEAN: _boolean_outcome,
    ANY: lambda value: (value, None),
}


# -- LIKE patterns (spec 3.4.3) ------------------------------------------------------------


def like_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a string matches a LIKE pattern as a whole.

    ``%`` matches any run of characters, ``_`` any one character; ``\\%``, ``\\_`` and
    ``\\\\`` match ``%``, ``_`` and ``\\``; any other character (including a backslash that
    escapes nothing) matches itself, case-sensitively. The pattern is split at ``%`` into
    fixed-length segments that are placed left to right at their earliest position. That is
    exact for such patterns and, unlike a backtracking regular expression (which can take
    time exponential in the number of ``%``), never revisits a segment once placed; the
    common shapes (exact, prefix, suffix, infix) use plain string methods.
    """
    segments: list[list[str | None]] = [[]]  # None stands for '_'
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_\\":
            segments[-1].append(pattern[i + 1])
            i += 2
            continue
        if ch == "%":
            if segments[-1] or len(segments) == 1:  # '%%' means the same as '%'
                segments.append([])
        else:
            segments[-1].append(None if ch == "_" else ch)
        i += 1

    if all(c is not None for segment in segments for c in segment):
        plain = ["".join(c for c in segment if c is not None) for segment in segments]
        if len(plain) == 1:
            return plain[0].__eq__
        if len(plain) == 2:
            head, tail = plain
            if not tail:
                return lambda s: s.startswith(head)
            if not head:
                return lambda s: s.endswith(tail)
            least = len(head) + len(tail)
            return lambda s: len(s) >= least and s.startswith(head) and s.endswith(tail)
        if len(plain) == 3 and not plain[0] and not plain[2]:
            middle = plain[1]
            return lambda s: middle in s

    compiled = [
        re.compile("".join("." if c is None else re.escape(c) for c in segment), re.DOTALL)
        for segment in segments
    ]
    lengths = [len(segment) for segment in segments]
    first, last = compiled[0], compiled[-1]
    if len(compiled) == 1:
        return lambda s: len(s) == lengths[0] and first.match(s) is not None
    middles = list(zip(compiled[1:-1], lengths[1:-1], strict=True))
    least = sum(lengths)

    def match(s: str) -> bool:
        if len(s) < least or first.match(s) is None:
            return False
        pos = lengths[0]
        for regex, length in middles:
            found = regex.search(s, pos)
            if found is None:
                return False
            pos = found.start() + length
        start = len(s) - lengths[-1]
        return start >= pos and last.match(s, start) is not None

    return match


# -- built-in functions (spec 3.5) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Function:
    """One function overload: fixed parameter types, then optionally any number of ``variadic``."""

    name: str
    params: tuple[str, ...]
    variadic: str | None
    returns: str
    impl: Callable[[Sequence[Value]], Outcome]

    def accepts(self, arity: int) -> bool:
        fixed = len(self.params)
        return arity == fixed or (self.variadic is not None and arity > fixed)

    def param_type(self, index: int) -> str:
        if index < len(self.params):
            return self.params[index]
        assert self.variadic is not None
        return self.variadic

    def signature(self) -> str:
        args = list(self.params) + ([f"{self.variadic}..."] if self.variadic else [])
        return f"{self.name}({', '.join(args)})"


def _str(value: Value) -> str:
    assert type(value) is str
    return value


def _int(value: Value) -> int:
    assert type(value) is int
    return value


# Unicode White_Space (TRIM removes exactly these, per spec 3.5.1). Python's str.strip()
# would also remove the control characters U+001C..U+001F, which the spec keeps.
_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _left(args: Sequence[Value]) -> Outcome:
    text, count = _str(args[0]), _int(args[1])
    if count < 0:
        return text, CesqlError(FUNCTION_EVALUATION, f"LEFT length {count} is negative")
    return text[:count], None


def _right(args: Sequence[Value]) -> Outcome:
    text, count = _str(args[0]), _int(args[1])
    if count < 0:
        return text, CesqlError(FUNCTION_EVALUATION, f"RIGHT length {count} is negative")
    # text[-0:] would be the whole string, hence the explicit bound.
    return text[max(len(text) - count, 0) :], None


def _substring(args: Sequence[Value]) -> Outcome:
    text, pos = _str(args[0]), _int(args[1])
    size = len(text)
    if pos > size or pos < -size:
        return "", CesqlError(
            FUNCTION_EVALUATION, f"SUBSTRING position {pos} is outside a string of length {size}"
        )
    length = _int(args[2]) if len(args) == 3 else None
    if length is not None and length < 0:
        return "", CesqlError(FUNCTION_EVALUATION, f"SUBSTRING length {length} is negative")
    if pos == 0:
        return "", None
    start = pos - 1 if pos > 0 else size + pos
    return (text[start:] if length is None else text[start : start + length]), None


def _abs(args: Sequence[Value]) -> Outcome:
    number = _int(args[0])
    if number == INT_MIN:
        return INT_MAX, CesqlError(MATH, f"ABS({INT_MIN}) overflows 32 bits")
    return abs(number), None


def _fn(name: str, params: str, returns: str, impl: Callable[[Sequence[Value]], Outcome]) -> Function:
    """Declare an overload; ``params`` is a compact signature like ``"S,I"`` or ``"S,S..."``."""
    codes = {"S": STRING, "I": INTEGER, "B": BOOLEAN, "*": ANY}
    fixed: list[str] = []
    variadic = None
    for code in filter(None, params.split(",")):
        if code.endswith("..."):
            variadic = codes[code[:-3]]
        else:
            fixed.append(codes[code])
    return Function(name, tuple(fixed), variadic, returns, impl)


_BUILTIN_LIST: Final = (
    _fn("LENGTH", "S", INTEGER, lambda a: (len(_str(a[0])), None)),
    _fn("CONCAT", "S...", STRING, lambda a: ("".join(map(_str, a)), None)),
    _fn("CONCAT_WS", "S,S...", STRING, lambda a: (_str(a[0]).join(map(_str, a[1:])), None)),
    _fn("LOWER", "S", STRING, lambda a: (_str(a[0]).lower(), None)),
    _fn("UPPER", "S", STRING, lambda a: (_str(a[0]).upper(), None)),
    _fn("TRIM", "S", STRING, lambda a: (_str(a[0]).strip(_WHITESPACE), None)),
    _fn("LEFT", "S,I", STRING, _left),
    _fn("RIGHT", "S,I", STRING, _right),
    _fn("SUBSTRING", "S,I", STRING, _substring),
    _fn("SUBSTRING", "S,I,I", STRING, _substring),
    _fn("ABS", "I", INTEGER, _abs),
    _fn("INT", "*", INTEGER, lambda a: to_integer(a[0])),
    _fn("BOOL", "*", BOOLEAN, lambda a: to_boolean(a[0], explicit=True)),
    _fn("STRING", "*", STRING, lambda a: (to_string(a[0]), None)),
    _fn("IS_INT", "*", BOOLEAN, lambda a: (to_integer(a[0])[1] is None, None)),
    _fn("IS_BOOL", "*", BOOLEAN, lambda a: (to_boolean(a[0], explicit=True)[1] is None, None)),
)

BUILTINS: Final[dict[str, tuple[Function, ...]]] = {}
for _overload in _BUILTIN_LIST:
    BUILTINS[_overload.name] = (*BUILTINS.get(_overload.name, ()), _overload)


def resolve(name: str, arity: int) -> Function | CesqlError:
    """The overload of ``name`` taking ``arity`` arguments, or the MissingFunction error."""
    overloads = BUILTINS.get(name, ())
    for overload in overloads:
        if overload.accepts(arity):
            return overload
    if not overloads:
        return CesqlError(MISSING_FUNCTION, f"unknown function {name}")
    known = " or ".join(o.signature() for o in overloads)
    plural = "" if arity == 1 else "s"
    return CesqlError(MISSING_FUNCTION, f"no {name} takes {arity} argument{plural} (there is {known})")
