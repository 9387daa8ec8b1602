"""The exception tree of evroute. Every error the library raises is an ``EvrouteError``.

::

    EvrouteError                 message names what is wrong and how to fix it
    ├── InvalidInput             bad flag, event, file or request: CLI exit 2, ingress 400
    │   ├── InvalidEvent         an event that is not a valid CloudEvent
    │   │   └── EventTooLarge    over settings.maxEventBytes (ingress 413)
    │   ├── InvalidDuration      not an ISO 8601 or short-form duration
    │   ├── CesqlParseError      CloudEvents SQL that does not parse
    │   ├── RoutesInvalid        routes.yaml with problems (all of them, in ``problems``)
    │   └── NotFound             a route, event or dead letter that does not exist
    └── RuntimeFault             a fault at run time: CLI exit 1
        ├── StoreError           the database cannot be opened or written
        │   └── LeaseLost        a worker's write refused: another worker holds the lease now
        └── LeaseHeld            another worker holds the database lease

The CLI turns any of them into one line ``Error: <message>`` and the exit code in
``exit_code``; nothing else in the code base prints errors.
"""

from __future__ import annotations


class EvrouteError(Exception):
    """Base of every evroute error."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(EvrouteError):
    """Bad input from the user: nothing was stored or written."""

    exit_code = 2


class InvalidEvent(InvalidInput):
    """An event that is not a valid CloudEvents 1.0 event."""


class EventTooLarge(InvalidEvent):
    """An event larger than ``settings.maxEventBytes``."""


class InvalidDuration(InvalidInput):
    """A duration that is neither ISO 8601 (``PT1S``) nor short form (``500ms``)."""


class CesqlParseError(InvalidInput):
    """A CloudEvents SQL expression that does not parse."""


class NotFound(InvalidInput):
    """A named thing (route, event, dead letter) that does not exist."""


class RoutesInvalid(InvalidInput):
    """A routes file with one or more problems; ``problems`` holds every line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"routes file has {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(self.problems))


class RuntimeFault(EvrouteError):
    """A fault at run time (exit 1)."""

    exit_code = 1


class StoreError(RuntimeFault):
    """The database cannot be opened, created or written."""


class LeaseLost(StoreError):
    """A worker's write was refused because another worker holds the lease now."""


class LeaseHeld(RuntimeFault):
    """Another worker holds the lease on this database."""


__all__ = [
    "CesqlParseError",
    "EventTooLarge",
    "EvrouteError",
    "InvalidDuration",
    "InvalidEvent",
    "InvalidInput",
    "LeaseHeld",
    "LeaseLost",
    "NotFound",
    "RoutesInvalid",
    "RuntimeFault",
    "StoreError",
]
