"""Event filters: Knative's attribute filter and SubscriptionsAPI dialects, and CloudEvents SQL.

:func:`compile_filters` turns a route's ``filter`` / ``filters`` into a
:class:`~evroute.filters.matcher.Matcher` once, when the routes file loads.
"""

from evroute.filters.attributes import (
    DIALECTS,
    FilterProblem,
    as_text,
    check,
    compile_filters,
    empty_expressions,
)

__all__ = ["DIALECTS", "FilterProblem", "as_text", "check", "compile_filters", "empty_expressions"]
