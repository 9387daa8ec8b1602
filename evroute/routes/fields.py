"""Validation of the fields a routes file holds, shared by evroute and Knative documents.

A :class:`Checker` collects every problem of one file (it never stops at the first) as
``FILE:LINE:COL: route 'NAME': field: what is wrong (what is allowed)``, and turns valid
fields into model values: delivery layers, sinks, headers, signing secrets. ``${VAR}``
expansion happens here; every expanded value is returned as a secret, so a route can mask
it in every line evroute prints.

Two passes share this code. The structure pass (``resolve=False``) reads what every command
needs (names, brokers, start, filters) and the same from any shell: an unset ``${VAR}``
stays as written, programs are not looked up, and a value that holds a variable is checked only for
what it can be checked without it (a variable that is set is expanded, and masked, as
usual). The delivering pass (``resolve=True``: the worker,
``routes check``) expands every variable and finds every program, or says which is missing.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from evroute.durations import parse_duration
from evroute.errors import InvalidDuration
from evroute.routes.model import CircuitBreaker, RateLimit, Route, Subscriber
from evroute.routes.yamltree import Doc, Path, Pos

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: `$` would pass a trailing newline
NAME_RULE = "allowed: ^[a-z0-9][a-z0-9-]{0,62}$, lowercase letters, digits and '-'"
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

# routes.yaml name -> Delivery field
DELIVERY_FIELDS = {
    "retry": "retry",
    "backoffPolicy": "backoff_policy",
    "backoffDelay": "backoff_delay",
    "backoffMax": "backoff_max",
    "timeout": "timeout",
    "retryAfterMax": "retry_after_max",
    "deadLetterSink": "dead_letter_sink",
    "format": "format",
    "ordering": "ordering",
    "concurrency": "concurrency",
    "circuitBreaker": "circuit_breaker",
    "rateLimit": "rate_limit",
    "endpointCooldown": "endpoint_cooldown",
}
CHOICES = {
    "backoffPolicy": ("exponential", "linear"),
    "format": ("binary", "json"),
    "ordering": ("unordered", "ordered"),
}
SINK_KEYS = ("uri", "command", "ref")
SUBSCRIBER_KEYS = (*SINK_KEYS, "uris")  # uris: competing consumers, a route's subscriber only
KNATIVE_SINK_KEYS = ("CACerts", "audience")  # meaningful on a cluster only: ignored with a note
REF_KEYS = ("apiVersion", "kind", "name", "namespace")


@dataclass(frozen=True, slots=True)
class Where:
    """A place in a document: ``path`` from the document root; the label drops ``root`` parts."""

    doc: Doc
    path: Path
    root: int = 0

    def __truediv__(self, key: str | int) -> Where:
        return Where(self.doc, (*self.path, key), self.root)

    def pos(self, key: bool = False) -> Pos:
        return self.doc.pos(self.path, key)

    @property
    def label(self) -> str:
        return label(self.path[self.root :])


def label(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def show(value: object) -> str:
    """A value as written, for messages."""
    return repr(value) if isinstance(value, str) else "nothing" if value is None else str(value)


class Checker:
    """Collects the problems and notes of one routes file and validates its fields."""

    def __init__(self, path: str, env: Mapping[str, str], resolve: bool = True) -> None:
        self.path = path
        self.folder = os.path.dirname(os.path.abspath(path))
        self.env = env
        self.resolve = resolve
        self.variables: set[str] = set()  # every variable expanded: hidden from commands
        self.problems: list[tuple[Pos, str]] = []
        self.notes: list[str] = []
        self.services: dict[str, tuple[str, frozenset[str]]] = {}  # name -> (base URI, secrets)

    # -------------------------------------------------------------- reporting

    def problem(self, where: Where, scope: str, what: str, key: bool = False) -> None:
        line, col = where.pos(key)
        # A problem with a key itself is told under its parent: "delivery: unknown key 'x'".
        name = Where(where.doc, where.path[:-1], where.root).label if key else where.label
        self.problems.append(
            ((line, col), f"{self.path}:{line}:{col}: {scope}{name + ': ' if name else ''}{what}")
        )

    def raw(self, pos: Pos, scope: str, what: str) -> None:
        self.problems.append((pos, f"{self.path}:{pos[0]}:{pos[1]}: {scope}{what}"))

    def note(self, where: Where, scope: str, what: str) -> None:
        line, _ = where.pos()
        self.notes.append(f"{self.path}:{line}: {scope}{what}")

    def keys(self, value: Mapping[str, Any], allowed: Iterable[str], where: Where, scope: str) -> bool:
        """Report keys of ``value`` outside ``allowed``; True when there were none."""
        allowed = list(allowed)
        clean = True
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.problem(
                    where / key, scope, f"unknown key '{key}' ({hint}allowed: {', '.join(allowed)})", True
                )
                clean = False
        return clean

    def mapping(self, value: object, where: Where, scope: str, what: str) -> Mapping[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(where, scope, f"must be a mapping ({what}), got {show(value)}")
            return None
        return value

    # -------------------------------------------------------------- scalars

    def name(self, value: object, where: Where, scope: str) -> str | None:
        if not isinstance(value, str) or not NAME.match(value):
            self.problem(where, scope, f"{show(value)} is invalid ({NAME_RULE}, at most 63 characters)")
            return None
        return value

    def choice(
        self, value: object, choices: tuple[str, ...], where: Where, scope: str, what: str
    ) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.problem(where, scope, f"unknown {what} {show(value)} (allowed: {', '.join(choices)})")
            return None
        return value

    def integer(self, value: object, least: int, where: Where, scope: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(
                where, scope, f"must be an integer, got {show(value)} (allowed: an integer >= {least})"
            )
            return None
        if value < least:
            what = "must not be negative" if least == 0 else f"must be at least {least}"
            self.problem(where, scope, f"{what}, got {value} (allowed: an integer >= {least})")
            return None
        return value

    def boolean(self, value: object, where: Where, scope: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(where, scope, f"must be true or false, got {show(value)}")
            return None
        return value

    def duration(self, value: object, where: Where, scope: str, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except InvalidDuration as exc:
            self.problem(where, scope, exc.message)
            return None
        if positive and seconds <= 0:
            self.problem(where, scope, f"must be longer than zero, got {show(value)}")
            return None
        return seconds

    def expand(self, text: str, where: Where, scope: str, secrets: set[str]) -> str | None:
        """``text`` with ``${VAR}`` replaced from the environment (``$${`` is a literal ``${``)."""
        missing: list[str] = []

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            var = match.group(1)
            if VAR_NAME.match(var) and var not in self.env and not self.resolve:
                return match.group(0)  # the structure pass keeps an unset ${VAR} as written
            if not VAR_NAME.match(var) or var not in self.env:
                missing.append(var)
                return ""
            value = self.env[var]
            self.variables.add(var)
            if value:
                secrets.add(value)
            return value

        out = _VAR.sub(sub, text)
        for var in missing:
            if VAR_NAME.match(var):
                self.problem(
                    where,
                    scope,
                    f"${{{var}}} is not set in the environment (export {var}=…, or write $${{{var}}} for the text itself)",
                )
            else:
                self.problem(
                    where,
                    scope,
                    f"${{{var}}} is not a variable name (allowed: ${{NAME}} with letters, digits, _)",
                )
        return None if missing else out

    def deferred(self, raw: str) -> bool:
        """True when ``raw`` holds a variable the structure pass leaves for the delivering one."""
        return not self.resolve and any(m.group(1) and m.group(1) not in self.env for m in _VAR.finditer(raw))

    def http_uri(
        self, raw: str, value: str, where: Where, scope: str, secrets: set[str] | None = None
    ) -> str | None:
        """``value`` if it is an absolute http(s) URI; the password of ``user:password@`` in it
        joins ``secrets`` (it is sent as Basic authorization and masked in every output)."""
        if self.deferred(raw):
            return value
        if not is_http_uri(value):
            self.problem(
                where,
                scope,
                f"{raw!r} is not an absolute http(s) URI (allowed: http://HOST[:PORT]/PATH or https://…)",
            )
            return None
        if secrets is not None and "@" in value:
            from urllib.parse import urlsplit

            password = urlsplit(value).password
            if password:
                secrets.add(password)
        return value

    # -------------------------------------------------------------- sinks

    def sink(
        self, value: object, where: Where, scope: str, secrets: set[str], several: bool = False
    ) -> Subscriber | None:
        """A subscriber or dead-letter sink: a URI, ``{uri}``, ``{command}`` or a Knative ``{ref}``;
        with ``several`` (a route's subscriber) also ``{uris: [URI, …]}``."""
        if isinstance(value, str):
            expanded = self.expand(value, where, scope, secrets)
            uri = None if expanded is None else self.http_uri(value, expanded, where, scope, secrets)
            return None if uri is None else Subscriber(uri=uri)
        if not isinstance(value, Mapping) or not value:
            self.problem(
                where, scope, f"must be a URI, {{uri: …}}, {{command: […]}} or {{ref: …}}, got {show(value)}"
            )
            return None
        if not self.keys(
            value, (*(SUBSCRIBER_KEYS if several else SINK_KEYS), *KNATIVE_SINK_KEYS), where, scope
        ):
            return None
        if "uris" in value:
            if any(k in value for k in SINK_KEYS):
                self.problem(where, scope, "both uris and uri/command/ref are set (allowed: one of them)")
                return None
            return self.uris(value["uris"], where / "uris", scope, secrets)
        for key in KNATIVE_SINK_KEYS:
            if key in value:
                self.note(where / key, scope, f"{where.label}.{key} is ignored (it applies on a cluster)")
        if "command" in value:
            if "uri" in value or "ref" in value:
                self.problem(where, scope, "both command and uri/ref are set (allowed: one of them)")
                return None
            argv = self.command(value["command"], where / "command", scope)
            return None if argv is None else Subscriber(command=argv, cwd=self.folder)
        if "ref" in value:
            return self.ref(value["ref"], value.get("uri"), where, scope, secrets)
        if "uri" not in value:
            self.problem(where, scope, "needs uri, command or ref")
            return None
        raw = value["uri"]
        if not isinstance(raw, str):
            self.problem(where / "uri", scope, f"must be text, got {show(raw)}")
            return None
        expanded = self.expand(raw, where / "uri", scope, secrets)
        uri = None if expanded is None else self.http_uri(raw, expanded, where / "uri", scope, secrets)
        return None if uri is None else Subscriber(uri=uri)

    def uris(self, value: object, where: Where, scope: str, secrets: set[str]) -> Subscriber | None:
        """``uris: [URI, …]``: the endpoints of a consumer group, each an absolute http(s) URI."""
        if not isinstance(value, list) or not value:
            self.problem(
                where, scope, f"must be a list of URIs, got {show(value)} (allowed: [http://…, http://…])"
            )
            return None
        found: list[str] = []
        for i, raw in enumerate(value):
            at = where / i
            if not isinstance(raw, str):
                self.problem(at, scope, f"must be a URI, got {show(raw)} (allowed: http://HOST[:PORT]/PATH)")
                continue
            expanded = self.expand(raw, at, scope, secrets)
            uri = None if expanded is None else self.http_uri(raw, expanded, at, scope, secrets)
            if uri is None:
                continue
            if uri in found:
                self.problem(at, scope, f"{raw!r} is listed twice (each endpoint once)")
                continue
            found.append(uri)
        if len(found) != len(value):
            return None
        return Subscriber(uris=tuple(found))

    def ref(self, ref: object, rel: object, where: Where, scope: str, secrets: set[str]) -> Subscriber | None:
        at = where / "ref"
        if not isinstance(ref, Mapping):
            self.problem(at, scope, f"must be {{apiVersion, kind, name[, namespace]}}, got {show(ref)}")
            return None
        if not self.keys(ref, REF_KEYS, at, scope):
            return None
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            self.problem(at, scope, "needs a name (the service it points to)")
            return None
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none defined"
            self.problem(
                at / "name",
                scope,
                f"service '{name}' is not defined (add `{name}: http://…` under services:; known: {known})",
            )
            return None
        base, service_secrets = self.services[name]
        secrets.update(service_secrets)
        if rel is None:
            return Subscriber(uri=base)
        if not isinstance(rel, str):
            self.problem(where / "uri", scope, f"must be text, got {show(rel)}")
            return None
        expanded = self.expand(rel, where / "uri", scope, secrets)
        if expanded is None:
            return None
        if urlsplit(expanded).scheme and not self.deferred(rel):
            self.problem(
                where / "uri",
                scope,
                f"{rel!r} must be relative when ref is set (Knative joins it to the ref's URI)",
            )
            return None
        return Subscriber(uri=urljoin(base, expanded))

    def command(self, value: object, where: Where, scope: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                self.problem(
                    where, scope, f"cannot split {value!r}: {exc} (allowed: a list, or shell-like words)"
                )
                return None
        elif isinstance(value, list) and all(
            isinstance(a, str | int | float) and not isinstance(a, bool) for a in value
        ):
            argv = [str(a) for a in value]
        else:
            self.problem(where, scope, f"must be a list of words or a string, got {show(value)}")
            return None
        if not argv or not argv[0]:
            self.problem(where, scope, "empty (allowed: [program, arg, …])")
            return None
        if not self.resolve:
            return tuple(argv)  # PATH differs from shell to shell: looked up where it runs
        program = find_program(argv[0], self.folder)
        if program is None:
            self.problem(
                where,
                scope,
                f"program {argv[0]!r} not found (allowed: a program on PATH, or a path relative to {self.folder})",
            )
            return None
        return (program, *argv[1:])

    # -------------------------------------------------------------- delivery

    def delivery(self, value: object, where: Where, scope: str) -> tuple[dict[str, Any], frozenset[str]]:
        """One layer of delivery settings: the Delivery fields it sets, and the secrets it used."""
        layer: dict[str, Any] = {}
        secrets: set[str] = set()
        body = self.mapping(value, where, scope, "retry, backoffPolicy, backoffDelay, …")
        if not body:
            return layer, frozenset()
        self.keys(body, DELIVERY_FIELDS, where, scope)
        for key, raw in body.items():
            at = where / key
            if key not in DELIVERY_FIELDS:
                continue
            parsed: Any = None
            if key == "retry":
                parsed = self.integer(raw, 0, at, scope)
            elif key == "concurrency":
                parsed = self.integer(raw, 1, at, scope)
            elif key in CHOICES:
                what = {"backoffPolicy": "policy", "format": "format", "ordering": "ordering"}[key]
                parsed = self.choice(raw, CHOICES[key], at, scope, what)
            elif key in ("backoffDelay", "backoffMax", "retryAfterMax", "timeout", "endpointCooldown"):
                parsed = self.duration(raw, at, scope, positive=key == "timeout")
            elif key == "deadLetterSink":
                if raw is None:
                    layer["dead_letter_sink"] = None
                    continue
                parsed = self.sink(raw, at, scope, secrets)
            elif key == "circuitBreaker":
                if raw is None:
                    layer["circuit_breaker"] = None
                    continue
                parsed = self.breaker(raw, at, scope)
            elif key == "rateLimit":
                if raw is None:
                    layer["rate_limit"] = None
                    continue
                parsed = self.rate_limit(raw, at, scope)
            if parsed is not None:
                layer[DELIVERY_FIELDS[key]] = parsed
        return layer, frozenset(secrets)

    def breaker(self, value: object, where: Where, scope: str) -> CircuitBreaker | None:
        body = self.mapping(value, where, scope, "{consecutiveFailures: N, cooldown: D}")
        if body is None or not self.keys(body, ("consecutiveFailures", "cooldown"), where, scope):
            return None
        missing = [k for k in ("consecutiveFailures", "cooldown") if k not in body]
        if missing:
            self.problem(
                where,
                scope,
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (allowed: {{consecutiveFailures: N, cooldown: D}})",
            )
            return None
        failures = self.integer(body["consecutiveFailures"], 1, where / "consecutiveFailures", scope)
        cooldown = self.duration(body["cooldown"], where / "cooldown", scope, positive=True)
        if failures is None or cooldown is None:
            return None
        return CircuitBreaker(consecutive_failures=failures, cooldown=cooldown)

    def rate_limit(self, value: object, where: Where, scope: str) -> RateLimit | None:
        """``{rate: N, per: D, burst: M}``: per defaults to 1s, burst to rate."""
        shape = "{rate: N, per: D, burst: M}"
        body = self.mapping(value, where, scope, shape)
        if body is None or not self.keys(body, ("rate", "per", "burst"), where, scope):
            return None
        if "rate" not in body:
            self.problem(where, scope, f"rate is required (allowed: {shape})")
            return None
        rate = self.integer(body["rate"], 1, where / "rate", scope)
        per = self.duration(body.get("per", "1s"), where / "per", scope, positive=True)
        burst = self.integer(body["burst"], 1, where / "burst", scope) if "burst" in body else rate
        if rate is None or per is None or burst is None:
            return None
        return RateLimit(rate=rate, per=per, burst=burst)

    # -------------------------------------------------------------- headers and signing

    def headers(self, value: object, where: Where, scope: str, secrets: set[str]) -> dict[str, str]:
        body = self.mapping(value, where, scope, "header: value")
        out: dict[str, str] = {}
        for name, raw in (body or {}).items():
            at = where / name
            if not HEADER_NAME.match(name):
                self.problem(
                    at, scope, f"header name {name!r} is invalid (allowed: letters, digits and -)", True
                )
                continue
            if isinstance(raw, bool | int | str):
                text = (
                    raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
                )
            else:
                self.problem(at, scope, f"must be text, got {show(raw)}")
                continue
            expanded = self.expand(text, at, scope, secrets)
            if expanded is None:
                continue
            if "\r" in expanded or "\n" in expanded:
                self.problem(at, scope, "contains a line break (allowed: one line of text)")
                continue
            out[name] = expanded
            secrets.add(expanded)  # a header value is a credential as often as not: masked too
        return out

    def env_names(self, value: object, where: Where, scope: str) -> tuple[str, ...] | None:
        """A route's ``env:`` list: the variable names its command subscriber is given."""
        if not isinstance(value, list):
            self.problem(
                where, scope, f"must be a list of variable names, got {show(value)} (allowed: [NAME, …])"
            )
            return None
        names: list[str] = []
        for i, name in enumerate(value):
            if not isinstance(name, str) or not VAR_NAME.match(name):
                self.problem(
                    where / i, scope, f"{show(name)} is not a variable name (allowed: letters, digits, _)"
                )
            elif name not in names:
                names.append(name)
        return tuple(names)

    def signing(self, value: object, where: Where, scope: str, secrets: set[str]) -> str | None:
        body = self.mapping(value, where, scope, "{secret: whsec_…}")
        if not body or not self.keys(body, ("secret",), where, scope):
            return None
        raw = body.get("secret")
        if not isinstance(raw, str) or not raw:
            self.problem(where, scope, "secret is required (allowed: whsec_ followed by base64)")
            return None
        found: set[str] = set()
        secret = self.expand(raw, where / "secret", scope, found)
        secrets.update(found)
        if secret is None:
            return None
        secrets.add(secret)
        if self.deferred(raw):
            return secret
        key = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
        try:
            ok = bool(base64.b64decode(key, validate=True))
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            # Never echo the value: it is a secret, even when it is a wrong one.
            self.problem(
                where / "secret", scope, "not a Standard Webhooks secret (allowed: whsec_ followed by base64)"
            )
            return None
        return secret


@dataclass
class RawRoute:
    """A route as written, in routes.yaml vocabulary, from an evroute or a Knative document."""

    values: dict[str, Any]
    at: dict[str, Where]  # where each value is written
    where: Where  # the route itself
    scope: str  # "route 'NAME': "
    overrides: dict[str, Any] = field(default_factory=dict)  # Delivery fields set by annotations
    # Applied to the built route: what a foreign document sets beyond routes.yaml's vocabulary
    # (a Dapr Subscription's path rules and dead-letter topic).
    finish: Callable[[Route], Route] | None = None


def is_http_uri(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


def find_program(program: str, folder: str) -> str | None:
    """``program`` as it will run (cwd = the routes folder), or None if it cannot be found.

    A path with a slash is taken relative to the routes folder; a bare name is looked up on
    PATH, then in the routes folder (made absolute, since exec never searches the cwd)."""
    if os.sep in program or (os.altsep and os.altsep in program):
        full = program if os.path.isabs(program) else os.path.join(folder, program)
        return program if os.path.isfile(full) and os.access(full, os.X_OK) else None
    if shutil.which(program):
        return program
    local = os.path.join(folder, program)
    return local if os.path.isfile(local) and os.access(local, os.X_OK) else None
