"""A route's compiled filter: the value :func:`evroute.filters.compile_filters` builds."""

from __future__ import annotations

from collections.abc import Callable, Mapping


class Matcher:
    """A route's compiled filter. ``matches`` is the hot path; ``explain`` says which part failed."""

    __slots__ = ("_explain", "description", "matches")

    def __init__(
        self,
        matches: Callable[[Mapping[str, object]], bool],
        explain: Callable[[Mapping[str, object]], str | None],
        description: str,
    ) -> None:
        self.matches = matches
        self._explain = explain
        self.description = description

    def explain(self, attributes: Mapping[str, object]) -> str | None:
        """None when the event matches, else the filter part that failed."""
        return self._explain(attributes)

    def __repr__(self) -> str:
        return f"Matcher({self.description})"


def match_all() -> Matcher:
    return Matcher(lambda _a: True, lambda _a: None, "every event")
