"""CESQL evaluator: compiles a syntax tree, once, into nested Python closures.

Each closure takes the event (a mapping of attribute name to value) and returns a CESQL
value. Type dispatch happens on the fast path with ``type(v) is ...`` tests; casts,
overflow checks and error handling live on the slow path only. A typical filter such as
``type = 'x' AND subject LIKE 'eu-%'`` therefore runs as a handful of Python calls.

Errors follow the spec's fail-fast mode (4.1), which is what the conformance suite
expects: the first error raises :class:`~evroute.filters.cesql.functions.Abort` carrying
the value the failing operator or function defines for that case (``ABS(-2147483648)`` is
``2147483647``, ``LEFT('abc', -2)`` is ``'abc'``, an operator whose operand fails to cast
works on the zero value of the target type). Every enclosing operator then evaluates to
the zero value of its own result type, so ``true AND (1 != 1 / 0)`` is ``false`` and ``1 /
missing`` is ``0`` with a MissingAttribute error, not a Math error.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Final

from evroute.filters.cesql.functions import (
    ANY,
    BOOLEAN,
    CAST_TO,
    CAST_TO_TYPE_OF,
    INTEGER,
    MATH,
    MISSING_ATTRIBUTE,
    Abort,
    CesqlError,
    Function,
    Value,
    attribute_value,
    like_matcher,
    resolve,
    to_boolean,
    to_integer,
    to_string,
    type_name,
)
from evroute.filters.cesql.parser import (
    INT_MAX,
    INT_MIN,
    Attribute,
    Binary,
    Call,
    Exists,
    In,
    Like,
    Literal,
    Node,
    Unary,
)

Event = Mapping[str, object]
Evaluator = Callable[[Event], Value]
IntOp = Callable[[int, int], tuple[int, CesqlError | None]]


def compile_tree(node: Node) -> tuple[Evaluator, str]:
    """A closure evaluating ``node`` and the node's static result type (Boolean, Integer,
    String, or Any for a bare attribute)."""
    if isinstance(node, Literal):
        value = node.value
        return (lambda event: value), type_name(value)
    if isinstance(node, Attribute):
        return _attribute(node), ANY
    if isinstance(node, Exists):
        name = node.name
        return (lambda event: event.get(name) is not None), BOOLEAN
    if isinstance(node, Unary):
        if node.op == "NOT":
            return _not(node), BOOLEAN
        return _negate(node), INTEGER
    if isinstance(node, Binary):
        return _binary(node)
    if isinstance(node, Like):
        return _like(node), BOOLEAN
    if isinstance(node, In):
        return _in(node), BOOLEAN
    return _call(node)


def _attribute(node: Attribute) -> Evaluator:
    name = node.name
    missing = CesqlError(MISSING_ATTRIBUTE, f"the event has no attribute '{name}'")

    def attribute(event: Event) -> Value:
        value = event.get(name)
        if type(value) is str:
            return value
        # None is how mappings commonly spell an unset optional attribute.
        if value is None:
            raise Abort(missing, False, node)
        return attribute_value(value)

    return attribute


def _not(node: Unary) -> Evaluator:
    operand, _ = compile_tree(node.operand)

    def not_(event: Event) -> Value:
        value = operand(event)
        if value is True:
            return False
        if value is False:
            return True
        # A failed cast gives false, so NOT 10 is true along with the Cast error.
        flag, error = to_boolean(value)
        if error is not None:
            raise Abort(error, not flag, node)
        return not flag

    return not_


def _negate(node: Unary) -> Evaluator:
    # -x is 0 - x: the same casts, and the same overflow for -(-2147483648).
    operand, _ = compile_tree(node.operand)
    return _arithmetic(node, lambda event: 0, operand, _ARITHMETIC["-"])


# -- binary operators --------------------------------------------------------------------


def _fit(number: int) -> tuple[int, CesqlError | None]:
    """``number`` if it fits in 32 bits. Otherwise (``2147483647 + 1``, ``-2147483648 / -1``)
    the spec leaves the result open; evroute saturates to the nearest bound and reports a
    Math error, which is what spec 3.5.2 prescribes for ``ABS(-2147483648)``."""
    if INT_MIN <= number <= INT_MAX:
        return number, None
    bound = INT_MAX if number > 0 else INT_MIN
    return bound, CesqlError(MATH, f"integer overflow: {number} does not fit in 32 bits")


def _divide(a: int, b: int) -> tuple[int, CesqlError | None]:
    if b == 0:
        return 0, CesqlError(MATH, "division by zero")
    quotient = abs(a) // abs(b)  # truncated division: the quotient rounds towards zero
    return _fit(quotient if (a < 0) == (b < 0) else -quotient)


def _modulo(a: int, b: int) -> tuple[int, CesqlError | None]:
    if b == 0:
        return 0, CesqlError(MATH, "modulo by zero")
    remainder = abs(a) % abs(b)  # the remainder takes the sign of the dividend
    return (remainder if a >= 0 else -remainder), None


_ARITHMETIC: Final[dict[str, IntOp]] = {
    "+": lambda a, b: _fit(a + b),
    "-": lambda a, b: _fit(a - b),
    "*": lambda a, b: _fit(a * b),
    "/": _divide,
    "%": _modulo,
}

_ORDERING: Final[dict[str, Callable[[int, int], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _binary(node: Binary) -> tuple[Evaluator, str]:
    left, _ = compile_tree(node.left)
    right, _ = compile_tree(node.right)
    op = node.op
    if op == "AND":
        return _and(node, left, right), BOOLEAN
    if op == "OR":
        return _or(node, left, right), BOOLEAN
    if op == "XOR":
        return _xor(node, left, right), BOOLEAN
    if op in ("=", "!=", "<>"):
        return _equality(node, left, right, negated=op != "="), BOOLEAN
    if op in _ORDERING:
        return _ordering(node, left, right, _ORDERING[op]), BOOLEAN
    return _arithmetic(node, left, right, _ARITHMETIC[op]), INTEGER


def _and(node: Binary, left: Evaluator, right: Evaluator) -> Evaluator:
    def and_(event: Event) -> Value:
        a = left(event)
        if a is False:
            return False  # short circuit (spec 3.4.2): the right side is not evaluated
        if a is not True:
            a, error = to_boolean(a)
            if error is not None:
                raise Abort(error, False, node)  # the failed cast is false: short circuit
            if not a:
                return False
        b = right(event)
        if type(b) is bool:
            return b
        b, error = to_boolean(b)
        if error is not None:
            raise Abort(error, False, node)
        return b

    return and_


def _or(node: Binary, left: Evaluator, right: Evaluator) -> Evaluator:
    def or_(event: Event) -> Value:
        a = left(event)
        error = None
        if type(a) is not bool:
            a, error = to_boolean(a)
        if a:
            return True  # short circuit (spec 3.4.2): the right side is not evaluated
        if error is None:
            b = right(event)
            if type(b) is bool:
                return b
            b, error = to_boolean(b)
            if error is not None:
                raise Abort(error, False, node)
            return b
        # The left operand failed to cast: carry on with false, as the other operators do,
        # but report the cast error, which came first.
        try:
            b = right(event)
        except Abort:
            raise Abort(error, False, node) from None
        raise Abort(error, b if type(b) is bool else to_boolean(b)[0], node)

    return or_


def _xor(node: Binary, left: Evaluator, right: Evaluator) -> Evaluator:
    def xor(event: Event) -> Value:
        a = left(event)
        b = right(event)
        if type(a) is bool and type(b) is bool:
            return a is not b
        x, error_a = to_boolean(a)
        y, error_b = to_boolean(b)
        error = error_a or error_b
        if error is not None:
            raise Abort(error, x is not y, node)
        return x is not y

    return xor


def _equality(node: Binary, left: Evaluator, right: Evaluator, *, negated: bool) -> Evaluator:
    def equality(event: Event) -> Value:
        a = left(event)
        b = right(event)
        if type(a) is type(b):
            return (a == b) is not negated
        # '=' is ambiguous (spec 3.7): the right operand's type picks the overload, so the
        # left operand is cast to it.
        a, error = CAST_TO_TYPE_OF[type(b)](a)
        result = (a == b) is not negated
        if error is not None:
            raise Abort(error, result, node)
        return result

    return equality


def _ordering(node: Binary, left: Evaluator, right: Evaluator, test: Callable[[int, int], bool]) -> Evaluator:
    def ordering(event: Event) -> Value:
        a = left(event)
        b = right(event)
        if type(a) is int and type(b) is int:
            return test(a, b)
        x, error_a = to_integer(a)
        y, error_b = to_integer(b)
        result = test(x, y)
        error = error_a or error_b
        if error is not None:
            raise Abort(error, result, node)
        return result

    return ordering


def _arithmetic(node: Binary | Unary, left: Evaluator, right: Evaluator, op: IntOp) -> Evaluator:
    def arithmetic(event: Event) -> Value:
        a = left(event)
        b = right(event)
        if type(a) is int and type(b) is int:
            result, error = op(a, b)
        else:
            x, error_a = to_integer(a)
            y, error_b = to_integer(b)
            result, error_op = op(x, y)
            error = error_a or error_b or error_op
        if error is not None:
            raise Abort(error, result, node)
        return result

    return arithmetic


# -- LIKE, IN and function calls -----------------------------------------------------------


def _like(node: Like) -> Evaluator:
    operand, _ = compile_tree(node.operand)
    matches = like_matcher(node.pattern)
    negated = node.negated

    def like(event: Event) -> Value:
        value = operand(event)
        if type(value) is not str:
            value = to_string(value)  # spec 3.4.3: the left operand is cast to String
        return matches(value) is not negated

    return like


def _in(node: In) -> Evaluator:
    operand, _ = compile_tree(node.operand)
    negated = node.negated
    if all(isinstance(item, Literal) for item in node.items):
        # Literal sets are cast once, at compile time, to each type the left operand can
        # have at run time (spec 3.7: the left operand's type is the target type).
        tables: dict[type, tuple[frozenset[Value], CesqlError | None]] = {}
        for target, cast in CAST_TO_TYPE_OF.items():
            outcomes = [cast(item.value) for item in node.items if isinstance(item, Literal)]
            first_error = next((e for _, e in outcomes if e is not None), None)
            tables[target] = frozenset(v for v, _ in outcomes), first_error

        def in_literals(event: Event) -> Value:
            value = operand(event)
            members, error = tables[type(value)]
            result = (value in members) is not negated
            if error is not None:
                raise Abort(error, result, node)
            return result

        return in_literals

    items = [compile_tree(item)[0] for item in node.items]

    def in_(event: Event) -> Value:
        value = operand(event)
        candidates = [item(event) for item in items]
        cast = CAST_TO_TYPE_OF[type(value)]
        error = None
        found = False
        for candidate in candidates:
            if type(candidate) is not type(value):
                candidate, cast_error = cast(candidate)
                error = error or cast_error
            found = found or candidate == value
        result = found is not negated
        if error is not None:
            raise Abort(error, result, node)
        return result

    return in_


def _call(node: Call) -> tuple[Evaluator, str]:
    function = resolve(node.name, len(node.args))
    if isinstance(function, CesqlError):
        missing = function

        def missing_function(event: Event) -> Value:
            # Spec 3.5: a call that cannot be dispatched is false, with a MissingFunction error.
            raise Abort(missing, False, node)

        return missing_function, BOOLEAN
    args = [compile_tree(arg)[0] for arg in node.args]
    return _invoke(node, function, args), function.returns


def _invoke(node: Call, function: Function, args: list[Evaluator]) -> Evaluator:
    casts = list(enumerate(CAST_TO[function.param_type(i)] for i in range(len(args))))
    impl = function.impl

    def invoke(event: Event) -> Value:
        values = [arg(event) for arg in args]
        error = None
        for index, cast in casts:
            values[index], cast_error = cast(values[index])
            error = error or cast_error
        result, call_error = impl(values)
        error = error or call_error
        if error is not None:
            raise Abort(error, result, node)
        return result

    return invoke
