"""Knative filter semantics (pkg/eventfilter): attributes, exact/prefix/suffix, all/any/not, cesql."""

from __future__ import annotations

import pytest

from evroute.errors import InvalidInput
from evroute.filters import check, compile_filters, empty_expressions

EVENT = {
    "specversion": "1.0",
    "id": "order-1",
    "source": "/shop/eu/checkout",
    "type": "order.placed",
    "subject": "eu-west-1",
    "priority": 5,
    "express": True,
    "region": "",
}


def test_no_filter_matches_every_event() -> None:
    m = compile_filters({}, [])
    assert m.matches(EVENT) and m.matches({})
    assert m.explain(EVENT) is None
    assert m.description == "every event"


def test_attributes_filter_needs_every_key_equal() -> None:
    m = compile_filters({"type": "order.placed", "source": "/shop/eu/checkout"}, [])
    assert m.matches(EVENT)
    assert not m.matches({**EVENT, "source": "/shop/us"})
    assert m.explain({**EVENT, "type": "order.cancelled"}) == (
        "filter type: expected 'order.placed', got 'order.cancelled'"
    )


def test_attributes_filter_is_case_sensitive() -> None:
    m = compile_filters({"type": "order.placed"}, [])
    assert not m.matches({**EVENT, "type": "Order.Placed"})


def test_attributes_filter_missing_attribute_never_matches() -> None:
    m = compile_filters({"tenant": "acme"}, [])
    assert not m.matches(EVENT)
    assert m.explain(EVENT) == "filter tenant: expected 'acme', attribute missing"


def test_attributes_filter_empty_value_means_present_and_non_empty() -> None:
    m = compile_filters({"subject": ""}, [])
    assert m.matches(EVENT)
    assert not m.matches({k: v for k, v in EVENT.items() if k != "subject"})
    assert not m.matches({**EVENT, "subject": ""})
    assert compile_filters({"express": ""}, []).matches(EVENT)  # a boolean is present as "true"
    assert compile_filters({"region": ""}, []).explain(EVENT) == (
        "filter region: expected a non-empty value, got ''"
    )


def test_attributes_filter_compares_non_string_values_as_text() -> None:
    assert compile_filters({"priority": "5"}, []).matches(EVENT)
    assert compile_filters({"express": "true"}, []).matches(EVENT)
    assert not compile_filters({"express": "True"}, []).matches(EVENT)


def test_exact_prefix_suffix() -> None:
    assert compile_filters({}, [{"exact": {"type": "order.placed"}}]).matches(EVENT)
    assert not compile_filters({}, [{"exact": {"type": "order"}}]).matches(EVENT)
    assert compile_filters({}, [{"prefix": {"source": "/shop/"}}]).matches(EVENT)
    assert not compile_filters({}, [{"prefix": {"source": "/Shop/"}}]).matches(EVENT)
    assert compile_filters({}, [{"suffix": {"source": "/checkout"}}]).matches(EVENT)
    assert not compile_filters({}, [{"suffix": {"source": "/Checkout"}}]).matches(EVENT)


def test_string_dialects_never_match_a_missing_attribute() -> None:
    for dialect in ("exact", "prefix", "suffix"):
        m = compile_filters({}, [{dialect: {"tenant": "a"}}])
        assert not m.matches(EVENT)
        assert m.explain(EVENT) == f"filters[0] {dialect} tenant: 'a', attribute missing"


def test_string_dialects_compare_extension_values_as_text() -> None:
    assert compile_filters({}, [{"exact": {"priority": "5"}}]).matches(EVENT)
    assert compile_filters({}, [{"prefix": {"express": "tr"}}]).matches(EVENT)
    assert compile_filters({}, [{"suffix": {"priority": "5"}}]).matches(EVENT)
    assert compile_filters({}, [{"exact": {"express": "false"}}]).matches({**EVENT, "express": False})


def test_filters_list_is_all_and_explains_the_first_failing_item() -> None:
    m = compile_filters({}, [{"exact": {"type": "order.placed"}}, {"prefix": {"source": "/warehouse/"}}])
    assert not m.matches(EVENT)
    assert m.explain(EVENT) == "filters[1] prefix source: '/warehouse/', got '/shop/eu/checkout'"


def test_all_any_not() -> None:
    any_of = [{"any": [{"exact": {"type": "order.cancelled"}}, {"exact": {"type": "order.placed"}}]}]
    assert compile_filters({}, any_of).matches(EVENT)
    none_of = [{"any": [{"exact": {"type": "a"}}, {"suffix": {"source": "/b"}}]}]
    why = compile_filters({}, none_of).explain(EVENT)
    assert why == (
        "filters[0] any: no alternative matched (filters[0].any[0] exact type: 'a', got 'order.placed'; "
        "filters[0].any[1] suffix source: '/b', got '/shop/eu/checkout')"
    )
    both = [{"all": [{"exact": {"type": "order.placed"}}, {"prefix": {"subject": "us-"}}]}]
    assert (
        compile_filters({}, both).explain(EVENT) == "filters[0].all[1] prefix subject: 'us-', got 'eu-west-1'"
    )
    negated = compile_filters({}, [{"not": {"exact": {"type": "order.placed"}}}])
    assert not negated.matches(EVENT)
    assert negated.matches({**EVENT, "type": "order.cancelled"})
    assert negated.matches({k: v for k, v in EVENT.items() if k != "type"})  # missing: inner fails
    assert negated.explain(EVENT) == "filters[0] not: the event matches (type=order.placed)"


def test_cesql_true_only_for_boolean_true_without_errors() -> None:
    m = compile_filters({}, [{"cesql": "subject LIKE 'eu-%'"}])
    assert m.matches(EVENT)
    assert not m.matches({**EVENT, "subject": "us-east-1"})
    assert m.explain({**EVENT, "subject": "us-east-1"}) == "filters[0] cesql \"subject LIKE 'eu-%'\" (false)"
    missing = {k: v for k, v in EVENT.items() if k != "subject"}
    assert not m.matches(missing)
    assert (
        m.explain(missing)
        == "filters[0] cesql \"subject LIKE 'eu-%'\" (the event has no attribute 'subject')"
    )
    assert not compile_filters({}, [{"cesql": "priority + 1"}]).matches(EVENT)  # not a boolean
    assert compile_filters({}, [{"cesql": "priority > 3 AND express"}]).matches(EVENT)


def test_filters_overrides_filter() -> None:
    m = compile_filters({"type": "nope"}, [{"exact": {"type": "order.placed"}}])
    assert m.matches(EVENT)


def test_description_names_every_part() -> None:
    m = compile_filters(
        {},
        [
            {"exact": {"type": "order.placed"}},
            {"any": [{"prefix": {"source": "/shop/"}}, {"suffix": {"source": "/eu"}}]},
            {"not": {"cesql": "express"}},
        ],
    )
    assert m.description == 'type=order.placed, any(source^=/shop/ | source$=/eu), not(cesql "express")'


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([{"exact": {"type": ""}}], "empty value for 'type' (allowed: a non-empty string)"),
        ([{"exact": {"": "x"}}], "empty attribute name (allowed: a CloudEvents attribute name)"),
        ([{"prefix": {"Type": "x"}}], "attribute name 'Type' is invalid (allowed: lowercase letters and digits, starting with a letter)"),
        ([{"exact": {"type": "a"}, "prefix": {"source": "/"}}], "more than one dialect in one filter: exact, prefix (allowed: exactly one per item; combine them with all: [...])"),
        ([{"regex": {"type": "a"}}], "unknown filter dialect 'regex' (allowed: exact, prefix, suffix, all, any, not, cesql, cel)"),
        ([{"cesql": "type = "}], "CESQL: expected an expression but found end of expression at column 8 (allowed: CloudEvents SQL v1)"),
        ([{"any": {}}], "must be a list of filter expressions"),
        ([{"exact": {"type": "a", "source": ""}}], "empty value for 'source' (allowed: a non-empty string)"),
        ([[]], "must be one filter expression (allowed: exact, prefix, suffix, all, any, not, cesql, cel)"),
    ],
)  # fmt: skip
def test_check_names_each_problem(filters: list[object], message: str) -> None:
    problems = check(None, filters)
    assert [p.message for p in problems] == [message]
    with pytest.raises(InvalidInput):
        compile_filters({}, filters)


def test_check_walks_nested_expressions_with_paths() -> None:
    problems = check({"1bad": "x"}, [{"all": [{"not": {"suffix": {"type": ""}}}]}])
    assert [(p.path, p.key) for p in problems] == [
        (("filter", "1bad"), True),
        (("filters", 0, "all", 0, "not", "suffix", "type"), False),
    ]


def test_string_dialects_with_several_attributes_need_every_one() -> None:
    # Knative's webhook accepts these maps (its validation tests call them valid) and its
    # end-to-end Trigger tables use them: every attribute must match.
    for dialect, good, bad in (
        ("exact", {"type": "order.placed", "source": "/shop/eu/checkout"}, {"source": "/shop/us"}),
        ("prefix", {"type": "order.", "source": "/shop/"}, {"type": "invoice.placed"}),
        ("suffix", {"type": ".placed", "subject": "-1"}, {"subject": "eu-west-2"}),
    ):
        assert check(None, [{dialect: good}]) == []
        m = compile_filters({}, [{dialect: good}])
        assert m.matches(EVENT)
        assert not m.matches({**EVENT, **bad})
        assert not m.matches({k: v for k, v in EVENT.items() if k != "type"})
    m = compile_filters({}, [{"exact": {"type": "order.placed", "tenant": "acme"}}])
    assert m.explain(EVENT) == "filters[0] exact tenant: 'acme', attribute missing"
    assert m.description == "type=order.placed, tenant=acme"


@pytest.mark.parametrize(
    "filters",
    [
        [{}],
        [{"not": {}}],
        [{"all": []}],
        [{"any": []}],
        [{"not": {"not": {}}}],
        [{"all": [{}, {"any": []}]}],
        [{"cesql": ""}, {"exact": {}}],
    ],
)
def test_empty_expressions_are_no_filter(filters: list[object]) -> None:
    assert check(None, filters) == []
    m = compile_filters({"type": "never"}, filters)  # a non-empty filters list still overrides
    assert m.matches(EVENT) and m.matches({})
    assert m.explain(EVENT) is None


def test_empty_expressions_are_left_out_of_all_and_any() -> None:
    # Knative drops them from the list they stand in: any(fail, {}) is any(fail).
    m = compile_filters({}, [{"any": [{"exact": {"type": "a"}}, {"not": {}}]}])
    assert not m.matches(EVENT)
    m = compile_filters({}, [{"not": {}}, {"exact": {"type": "a"}}])
    assert not m.matches(EVENT)
    assert compile_filters({}, [{"all": [{}, {"exact": {"type": "order.placed"}}]}]).matches(EVENT)
    assert empty_expressions([{"exact": {"type": "a"}}, {}, {"any": [{"not": {}}]}]) == [
        ("filters", 1),
        ("filters", 2, "any", 0, "not"),
    ]
