"""A route's compiled filter: the value :func:`evroute.filters.compile_filters` builds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent

# Key under which a matcher that reads the event's data (CEL) finds the whole event; not a
# CloudEvents attribute name, so no event collides with it. Same value as filters.cel.EVENT_KEY.
EVENT_KEY = "\x00event"


class Matcher:
    """A route's compiled filter. ``matches`` is the hot path; ``explain`` says which part failed.

    ``matches`` and ``explain`` take the event's attributes; a filter that also reads the
    event's data (``needs_event``) takes them from :meth:`matches_event` / :meth:`explain_event`,
    which hand it the whole event.
    """

    __slots__ = ("_explain", "description", "matches", "matches_event", "needs_event")

    def __init__(
        self,
        matches: Callable[[Mapping[str, object]], bool],
        explain: Callable[[Mapping[str, object]], str | None],
        description: str,
        needs_event: bool = False,
    ) -> None:
        self.matches = matches
        self._explain = explain
        self.description = description
        self.needs_event = needs_event
        self.matches_event: Callable[[CloudEvent], bool]
        if needs_event:
            self.matches_event = lambda event: matches(_with_event(event))
        else:
            self.matches_event = lambda event: matches(event.attributes)

    def explain(self, attributes: Mapping[str, object]) -> str | None:
        """None when the event matches, else the filter part that failed."""
        return self._explain(attributes)

    def explain_event(self, event: CloudEvent) -> str | None:
        """:meth:`explain` for a whole event (data included)."""
        return self._explain(_with_event(event) if self.needs_event else event.attributes)

    def __repr__(self) -> str:
        return f"Matcher({self.description})"


def _with_event(event: CloudEvent) -> Mapping[str, object]:
    attrs: dict[str, object] = dict(event.attributes)
    attrs[EVENT_KEY] = event
    return attrs


def match_all() -> Matcher:
    return Matcher(lambda _a: True, lambda _a: None, "every event")
