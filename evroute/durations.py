"""Durations as routes.yaml writes them: ISO 8601 (``PT0.5S``, ``PT1M``, ``P1D``) or short form
(``500ms``, ``2s``, ``1m``, ``1h``, ``1d``). Values are seconds as floats."""

from __future__ import annotations

import re

from evroute.errors import InvalidDuration

_ISO = re.compile(
    r"^P(?!$)(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_SHORT = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h|d)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
ALLOWED = "ISO 8601 like PT0.5S, PT1M, P1D, or 500ms, 2s, 1m, 1h, 1d"


def parse_duration(text: object) -> float:
    """Seconds in ``text``; raises InvalidDuration naming what is allowed."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise InvalidDuration(f"bad duration {text!r} ({ALLOWED})")
    raw = text.strip()
    short = _SHORT.match(raw)
    if short:
        return float(short["n"]) * _UNIT[short["u"]]
    iso = _ISO.match(raw.upper())
    if iso and any(iso.group(k) for k in "wdhms"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        return (
            parts.get("w", 0) * 604800
            + parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
    raise InvalidDuration(f"bad duration {text!r} ({ALLOWED})")


def format_duration(seconds: float) -> str:
    """ISO 8601 form of ``seconds`` as Knative writes it (``PT0.5S``, ``PT1M``)."""
    if seconds <= 0:
        return "PT0S"
    if seconds % 86400 == 0:
        return f"P{int(seconds // 86400)}D"
    if seconds % 3600 == 0:
        return f"PT{int(seconds // 3600)}H"
    if seconds % 60 == 0:
        return f"PT{int(seconds // 60)}M"
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"
