"""CESQL v1: every case of the upstream conformance suite (TCK), plus evroute's own checks.

The TCK files are read from the shared anchors folder next to the repository
(``<repo>/../shared/anchors/cloudevents-spec/cesql/cesql_tck/*.yaml``); they are never
copied into the project. Each TCK case is one test id, ``<file>/<nn> <case name>``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from evroute.errors import CesqlParseError, InvalidInput
from evroute.filters.cesql import CesqlError, Expression, compile_filter, parse
from evroute.filters.cesql.functions import like_matcher

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
TCK_DIR = ANCHORS / "cloudevents-spec" / "cesql" / "cesql_tck"
TCK_CASE_COUNT = 275
ERROR_KINDS = {
    "parse",
    "math",
    "cast",
    "missingFunction",
    "functionEvaluation",
    "missingAttribute",
    "generic",
}

# The "otherwise arbitrary valid event" that ``eventOverrides`` are applied to: all the
# core attributes and no extensions, so that extension names in the TCK are missing
# unless a case sets them.
BASE_EVENT: dict[str, object] = {
    "specversion": "1.0",
    "id": "tck-0001",
    "source": "https://evroute.test/tck",
    "type": "dev.evroute.tck",
    "subject": "tck-subject",
    "time": "2024-06-13T12:00:00Z",
    "datacontenttype": "application/json",
    "dataschema": "https://evroute.test/schema.json",
}


class _TckLoader(yaml.SafeLoader):
    """YAML loader that keeps timestamps as text: the TCK's events are "in JSON form", where
    ``time`` is a string, and its expected results compare against that string."""


_TckLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class TckCase:
    file: str
    name: str
    expression: str
    result: object
    error: str | None
    event: Mapping[str, object] = field(default_factory=dict)


def _load_tck() -> list[TckCase]:
    cases: list[TckCase] = []
    for path in sorted(TCK_DIR.glob("*.yaml")):
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_TckLoader)
        for test in document["tests"]:
            event = dict(test["event"]) if test.get("event") is not None else dict(BASE_EVENT)
            event.update(test.get("eventOverrides") or {})
            cases.append(
                TckCase(
                    file=path.stem,
                    name=test["name"],
                    expression=str(test["expression"]),
                    result=test.get("result"),
                    error=test.get("error"),
                    event=event,
                )
            )
    return cases


def _tck_params() -> list[object]:
    if not ANCHORS.is_dir():
        reason = f"CESQL TCK not available: the shared anchors folder {ANCHORS} is absent"
        return [pytest.param(None, id="tck-anchors-absent", marks=pytest.mark.skip(reason=reason))]
    params: list[object] = []
    counters: dict[str, int] = {}
    for case in _load_tck():
        counters[case.file] = counters.get(case.file, 0) + 1
        params.append(pytest.param(case, id=f"{case.file}/{counters[case.file]:02d} {case.name}"))
    return params


@pytest.mark.parametrize("case", _tck_params())
def test_tck(case: TckCase) -> None:
    assert case.error is None or case.error in ERROR_KINDS
    if case.error == "parse":
        with pytest.raises(CesqlParseError, match=r"^CESQL: [^\n]* at column \d+$"):
            parse(case.expression)
        return

    expression = parse(case.expression)
    value, errors = expression.evaluate(case.event)

    assert [e.kind for e in errors[:1]] == ([case.error] if case.error else [])
    # Compare types too: in Python True == 1 and False == 0.
    assert (type(value).__name__, value) == (type(case.result).__name__, case.result)
    # A filter matches exactly when the value is Boolean true and nothing went wrong.
    assert compile_filter(case.expression)(case.event) is (value is True and not errors)


def test_tck_is_complete() -> None:
    if not ANCHORS.is_dir():
        pytest.skip(f"CESQL TCK not available: the shared anchors folder {ANCHORS} is absent")
    assert len(list(TCK_DIR.glob("*.yaml"))) == 18
    assert len(_load_tck()) == TCK_CASE_COUNT


# -- compile_filter ----------------------------------------------------------------------

EVENT: dict[str, object] = {**BASE_EVENT, "type": "x", "subject": "eu-west-1", "myint": 10, "mybool": True}


@pytest.mark.parametrize(
    "text",
    [
        "missing = 'x'",  # missing attribute
        "NOT missing",
        "1 / 0 = 0",  # math error, although the comparison would hold
        "type = 'x' AND 1 / 0 = 0",
        "NOT 10",  # cast error, the value would be true
        "type = 'x' AND INT(subject) = 0",
        "NOSUCHFN(type)",  # missing function
        "LEFT(type, -1) = 'x'",  # function evaluation error
        "type",  # not a Boolean
        "myint",
        "TRUE = 'yes'",  # comparison of Boolean and a String that is no Boolean
    ],
)
def test_compile_filter_is_false_on_any_error(text: str) -> None:
    value, errors = parse(text).evaluate(EVENT)
    assert errors or value is not True
    assert compile_filter(text)(EVENT) is False


def test_compile_filter_matches() -> None:
    matches = compile_filter("type = 'x' AND subject LIKE 'eu-%'")
    assert matches(EVENT) is True
    assert matches({**EVENT, "subject": "us-east-1"}) is False
    assert matches({k: v for k, v in EVENT.items() if k != "subject"}) is False


def test_compile_filter_parses_once_and_rejects_bad_syntax() -> None:
    with pytest.raises(CesqlParseError):
        compile_filter("type = ")
    assert issubclass(CesqlParseError, InvalidInput)


# -- parse errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("ABC(", 5),
        ("type = ", 8),
        ("", 1),
        ("   ", 4),
        ("'abc", 1),
        ('type = "abc', 8),
        ("1 +* 2", 4),
        ("x LIKE 123", 8),
        ("x NOT LIKE y", 12),
        ("a_b = 1", 1),
        ("ab2(1)", 1),
        ("2147483648", 1),
        ("-2147483649 = 1", 1),
        ("x IN ()", 7),
        ("x IN 1", 6),
        ("type == 'x'", 7),
        ("type = 'x' 'y'", 12),
        ("EXISTS 'x'", 8),
        ("EXISTS", 7),
        ("LENGTH('a',)", 12),
        ("(1 + 2", 7),
        ("1 + 2)", 6),
        ("type ! 'x'", 6),
        ("type = 'x' AND", 15),
        ("+'5'", 1),
        ("é = 1", 1),
        ("IN", 1),
        ("x.y = 1", 2),
    ],
)
def test_parse_error_names_the_column(text: str, column: int) -> None:
    with pytest.raises(CesqlParseError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("CESQL: ")
    assert message.endswith(f" at column {column}"), message


@pytest.mark.parametrize(
    "text",
    ["(" * 200 + "1" + ")" * 200, "NOT " * 500 + "TRUE", " AND ".join(["TRUE"] * 500), "-" * 300 + "1"],
)
def test_deep_nesting_is_a_parse_error_not_a_crash(text: str) -> None:
    with pytest.raises(CesqlParseError, match="too deeply nested"):
        parse(text)


# -- semantics beyond the TCK ----------------------------------------------------------------


def _eval(text: str, event: Mapping[str, object] | None = None) -> tuple[object, list[str]]:
    value, errors = parse(text).evaluate(EVENT if event is None else event)
    return value, [e.kind for e in errors]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("myint", 10),
        ("myint + 1", 11),
        ("myint = 10", True),
        ("myint = '10'", True),  # the right operand's type decides: 10 is cast to '10'
        ("'10' = myint", True),
        ("myint > 9 AND myint < 11", True),
        ("myint LIKE '1_'", True),
        ("myint IN ('10', 'x')", False),  # 'x' is no Integer: see the cast error test
        ("myint IN (10, 11)", True),
        ("STRING(myint) = '10'", True),
        ("LENGTH(myint)", 2),
        ("mybool", True),
        ("mybool AND TRUE", True),
        ("NOT mybool", False),
        ("mybool = 'true'", True),
        ("mybool = 'TRUE'", False),  # true becomes 'true'; string comparison is case-sensitive
        ("mybool LIKE 't%'", True),
        ("EXISTS myint AND EXISTS mybool", True),
        ("INT(mybool) + myint", 11),
    ],
)
def test_non_string_extension_values(text: str, value: object) -> None:
    result, errors = _eval(text)
    if text == "myint IN ('10', 'x')":
        assert errors == ["cast"]
        return
    assert errors == []
    assert (type(result), result) == (type(value), value)


def test_other_attribute_value_types_are_strings() -> None:
    event = {**EVENT, "big": 2**40, "blob": b"\x00\xff", "ratio": 0.5, "unset": None}
    assert _eval("big", event) == ("1099511627776", [])
    assert _eval("blob", event) == ("AP8=", [])
    assert _eval("ratio", event) == ("0.5", [])
    assert _eval("unset", event) == (False, ["missingAttribute"])
    assert _eval("EXISTS unset", event) == (False, [])


@pytest.mark.parametrize(
    ("text", "value", "errors"),
    [
        ("TRUE OR FALSE AND FALSE", False, []),  # AND, OR, XOR share one level, left to right
        ("FALSE AND FALSE OR TRUE", True, []),
        ("NOT FALSE = FALSE", False, []),  # unary binds tighter: (NOT FALSE) = FALSE
        ("NOT (FALSE = FALSE)", False, []),
        ("2 + 3 * 4", 14, []),
        ("10 - 2 - 3", 5, []),
        ("100 / 10 / 5", 2, []),
        ("4 -1", 3, []),
        ("+5 - -5", 10, []),
        ("-7 / 2", -3, []),
        ("-7 % 2", -1, []),
        ("7 % -2", 1, []),
        ("2147483647 + 1", 2147483647, ["math"]),
        ("-2147483648 - 1", -2147483648, ["math"]),
        ("-(-2147483648)", 2147483647, ["math"]),
        ("-2147483648 / -1", 2147483647, ["math"]),
        ("65536 * 65536", 2147483647, ["math"]),
        ("(2147483647 + 1) = 0", False, ["math"]),
        ("'5' + 'x'", 5, ["cast"]),
        ("INT('2147483648')", 0, ["cast"]),
        ("INT('+0042')", 42, []),
        ("INT(' 1')", 0, ["cast"]),
        ("INT('١')", 0, ["cast"]),  # only ASCII digits
        ("BOOL('True')", True, []),
        ("IS_INT('-12')", True, []),
        ("IS_INT('1.5')", False, []),
        ("IS_BOOL('FALSE')", True, []),
        ("IS_BOOL('yes')", False, []),
        ("'it''s' = \"it's\"", True, []),
        ("TRIM(' \x1fa\u3000')", "\x1fa", []),  # control characters are not whitespace
        ("RIGHT('abc', 0)", "", []),
        ("SUBSTRING('abc', 2, 0)", "", []),
        ("SUBSTRING('abc', 1, -1)", "", ["functionEvaluation"]),
        ("CONCAT_WS('-', 1, TRUE)", "1-true", []),
        ("length('abc') = 3 aNd nOt FaLsE", True, []),
        ("EXISTS SOURCE AND SOURCE = source", True, []),
        ("1 IN (1, 1 / 0)", False, ["math"]),
        ("'a' IN (type, 'a')", True, []),
        ("TRUE XOR 'x'", True, ["cast"]),
        ("'x' OR TRUE", True, ["cast"]),
        ("nosuch(1 / 0)", False, ["missingFunction"]),
    ],
)
def test_semantics(text: str, value: object, errors: list[str]) -> None:
    result, kinds = _eval(text)
    assert kinds == errors
    assert (type(result), result) == (type(value), value)


def test_expression_is_immutable_and_keeps_its_source() -> None:
    expression = parse("type = 'x'")
    assert isinstance(expression, Expression)
    assert expression.source == "type = 'x'"
    assert expression == parse("type = 'x'")
    with pytest.raises(AttributeError):
        expression.source = "other"
    _, errors = parse("missing").evaluate({})
    assert errors == [CesqlError("missingAttribute", "the event has no attribute 'missing'")]


# -- LIKE against a reference, and fuzzing -------------------------------------------------


def _reference_like(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_\\":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append({"%": ".*", "_": "."}.get(pattern[i], re.escape(pattern[i])))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def test_like_matcher_agrees_with_a_regex_reference() -> None:
    rng = random.Random(20240613)
    alphabet = "ab%_\\\n"
    for _ in range(3000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        reference = _reference_like(pattern)
        matcher = like_matcher(pattern)
        for _ in range(8):
            text = "".join(rng.choice("ab%_\\\n") for _ in range(rng.randint(0, 8)))
            assert matcher(text) is (reference.fullmatch(text) is not None), (pattern, text)


def test_random_input_never_crashes() -> None:
    rng = random.Random(7)
    pieces = [
        "type", "myint", "mybool", "missing", "1", "0", "-", "+", "*", "/", "%", "=", "!=", "<>",
        "<", ">=", "(", ")", ",", "'a%'", '"b"', "TRUE", "false", "AND", "OR", "XOR", "NOT",
        "LIKE", "IN", "EXISTS", "ABS(", "LENGTH(", "SUBSTRING(", "CONCAT_WS(", "BOOL(", "2147483647",
    ]  # fmt: skip
    parsed = 0
    for _ in range(4000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 9)))
        try:
            expression = parse(text)
        except CesqlParseError as error:
            assert "\n" not in str(error) and " at column " in str(error)
            continue
        parsed += 1
        value, errors = expression.evaluate(EVENT)
        assert type(value) in (bool, int, str)
        assert type(value) is not int or -(2**31) <= value <= 2**31 - 1
        assert all(isinstance(e, CesqlError) and e.kind in ERROR_KINDS for e in errors)
        assert compile_filter(text)(EVENT) is (value is True and not errors)
    assert parsed > 100
