"""Delayed delivery: the ``evroutedeliverat`` extension attribute.

An event carrying ``evroutedeliverat`` (RFC 3339) is held for every route until that time; it
is validated wherever an event comes in (``publish``, files, the ingress, replies), so a
stored value always parses. ``publish --delay D`` and ``--at TIME`` set it.

A route that reads a held event puts it on its schedule (on SQLite, a retry row with no
attempt made yet, due at that time) and goes on with the events after it: a delayed event
never holds later ones back, and the schedule survives a restart.
"""

from __future__ import annotations

from evroute.clock import parse_time, rfc3339
from evroute.cloudevent import DELIVER_AT, CloudEvent
from evroute.errors import InvalidDuration, InvalidInput


def deliver_at(event: CloudEvent) -> float | None:
    """When ``event`` may first be delivered (Unix seconds), or None when it is not held."""
    value = event.attributes.get(DELIVER_AT)
    if not isinstance(value, str):
        return None
    return parse_time(value)


def held_until(event: CloudEvent, now: float) -> float | None:
    """The time ``event`` is held until, when that is still ahead of ``now``."""
    due = deliver_at(event)
    return due if due is not None and due > now else None


def stamp(delay: str | None, at: str | None, now: float) -> str | None:
    """The ``evroutedeliverat`` value for ``publish --delay D`` / ``--at TIME`` (None: neither)."""
    if delay is not None and at is not None:
        raise InvalidInput("give --delay or --at, not both")
    if delay is not None:
        from evroute.durations import parse_duration

        try:
            seconds = parse_duration(delay)
        except InvalidDuration as exc:
            raise InvalidInput(f"--delay: {exc.message}") from None
        return rfc3339(now + seconds)
    if at is not None:
        moment = parse_time(at) if at.strip() else None
        if moment is None:
            raise InvalidInput(f"--at {at!r} is not an RFC 3339 time (like 2026-12-01T09:00:00Z)")
        return rfc3339(moment)
    return None


__all__ = ["DELIVER_AT", "deliver_at", "held_until", "stamp"]
