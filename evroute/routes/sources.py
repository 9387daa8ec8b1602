"""Knative ``sources.knative.dev/v1`` ``PingSource`` documents in a routes file.

Read as Knative writes them::

    apiVersion: sources.knative.dev/v1
    kind: PingSource
    metadata: {name: heartbeat, namespace: shop}
    spec:
      schedule: "*/5 * * * *"          # cron, 5 fields (Knative's default: every minute)
      timezone: Europe/Berlin          # IANA name; UTC when unset
      contentType: application/json
      data: '{"beat": true}'           # or dataBase64
      sink:
        ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
      ceOverrides: {extensions: {team: ops}}

A sink that is a ``Broker`` ref publishes each tick into that broker, where routes take it as
any other event. A ``uri`` sink (or a ref to a Service named in ``services:``) is delivered by
a route the loader adds for the source, ``pingsource-<name>`` on broker ``pingsource-<name>``,
with the file's default delivery policy: retries, dead letters and ``status`` work for it too.
The schedule is checked when the file loads (croniter is imported only then).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from evroute.routes.fields import NAME, NAME_RULE, Checker, Where, show
from evroute.routes.model import PingSource
from evroute.routes.yamltree import Doc

API_VERSION = "sources.knative.dev/v1"
KIND = "PingSource"
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
SPEC_KEYS = ("schedule", "timezone", "contentType", "data", "dataBase64", "sink", "ceOverrides")
BROKER_API = "eventing.knative.dev/v1"
PREFIX = "pingsource-"


def is_pingsource(data: Mapping[str, Any]) -> bool:
    return data.get("kind") == KIND and data.get("apiVersion") == API_VERSION


def read_pingsource(c: Checker, doc: Doc, secrets: set[str]) -> PingSource | None:
    """The PingSource of ``doc``, or None after reporting every problem it has."""
    from evroute.sources.ping import check_schedule, check_timezone

    root = Where(doc, ())
    c.keys(doc.data, TOP_KEYS, root, "")
    meta = doc.data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        c.problem(root, "", "PingSource: metadata.name is required")
        return None
    scope = f"pingsource '{name}': "
    before = len(c.problems)
    if not NAME.match(name) or len(PREFIX + name) > 63:
        c.problem(
            root / "metadata" / "name",
            scope,
            f"{name!r} is invalid ({NAME_RULE}, at most {63 - len(PREFIX)} characters)",
        )
    namespace = meta.get("namespace", "default") if isinstance(meta, Mapping) else "default"
    if not isinstance(namespace, str) or not NAME.match(namespace):
        c.problem(root / "metadata" / "namespace", scope, f"{show(namespace)} is invalid ({NAME_RULE})")
    spec = c.mapping(doc.data.get("spec"), root / "spec", scope, "schedule, data, sink, …")
    if spec is None:
        return None
    at = root / "spec"
    c.keys(spec, SPEC_KEYS, at, scope)
    schedule = spec.get("schedule", "* * * * *")
    if not isinstance(schedule, str) or not schedule.strip():
        c.problem(at / "schedule", scope, f"must be a cron schedule like '*/5 * * * *', got {show(schedule)}")
    else:
        wrong = check_schedule(schedule)
        if wrong:
            c.problem(at / "schedule", scope, f"{schedule!r}: {wrong}")
    timezone = spec.get("timezone")
    if timezone is not None:
        wrong = check_timezone(timezone) if isinstance(timezone, str) and timezone else "must be text"
        if wrong:
            c.problem(at / "timezone", scope, f"{show(timezone)}: {wrong}")
    content_type = spec.get("contentType")
    if content_type is not None and (not isinstance(content_type, str) or "/" not in content_type):
        c.problem(
            at / "contentType", scope, f"must be a media type like application/json, got {show(content_type)}"
        )
    data: bytes | None = None
    if "data" in spec and "dataBase64" in spec:
        c.problem(at, scope, "both data and dataBase64 are set (allowed: one of them)")
    elif "data" in spec:
        if not isinstance(spec["data"], str):
            c.problem(at / "data", scope, f"must be text, got {show(spec['data'])}")
        else:
            data = spec["data"].encode("utf-8")
    elif "dataBase64" in spec:
        raw = spec["dataBase64"]
        try:
            data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            c.problem(at / "dataBase64", scope, "is not base64 text")
    extensions = _overrides(c, spec.get("ceOverrides"), at / "ceOverrides", scope)
    broker, uri = _sink(c, spec.get("sink"), at / "sink", scope, secrets)
    if len(c.problems) > before or (broker is None and uri is None):
        return None
    return PingSource(
        name=name,
        namespace=str(namespace),
        schedule=str(schedule).strip(),
        timezone=timezone,
        content_type=content_type,
        data=data,
        base64="dataBase64" in spec,
        broker=broker,
        uri=uri,
        extensions=extensions,
        line=doc.start[0],
    )


def _overrides(c: Checker, value: object, where: Where, scope: str) -> dict[str, str]:
    if value is None:
        return {}
    body = c.mapping(value, where, scope, "{extensions: {name: value}}")
    if not body or not c.keys(body, ("extensions",), where, scope):
        return {}
    ext = c.mapping(body.get("extensions"), where / "extensions", scope, "name: value")
    out: dict[str, str] = {}
    for key, raw in (ext or {}).items():
        from evroute.cloudevent import CORE

        if (
            not isinstance(key, str)
            or not key.isalnum()
            or key != key.lower()
            or len(key) > 20
            or key in CORE
        ):
            c.problem(
                where / "extensions" / str(key),
                scope,
                f"{key!r} is not an extension name (a-z, 0-9, at most 20)",
                True,
            )
        elif not isinstance(raw, str):
            c.problem(where / "extensions" / key, scope, f"must be text, got {show(raw)}")
        else:
            out[key] = raw
    return out


def _sink(
    c: Checker, value: object, where: Where, scope: str, secrets: set[str]
) -> tuple[str | None, str | None]:
    """(broker, None) for a Broker ref, (None, uri) for anything addressable."""
    if value is None:
        c.problem(where, scope, "sink is required (a Broker ref, or a uri)")
        return None, None
    ref = value.get("ref") if isinstance(value, Mapping) else None
    if isinstance(value, Mapping) and isinstance(ref, Mapping) and ref.get("kind") == "Broker":
        if not c.keys(value, ("ref",), where, scope) or not c.keys(
            ref, ("apiVersion", "kind", "name", "namespace"), where / "ref", scope
        ):
            return None, None
        name = ref.get("name")
        if ref.get("apiVersion", BROKER_API) != BROKER_API:
            c.problem(
                where / "ref" / "apiVersion",
                scope,
                f"a Broker is {BROKER_API}, got {show(ref.get('apiVersion'))}",
            )
            return None, None
        return c.name(name, where / "ref" / "name", scope), None
    sink = c.sink(value, where, scope, secrets)
    if sink is None:
        return None, None
    if sink.uri is None:
        c.problem(where, scope, "must be a Broker ref or an http(s) uri (a PingSource cannot run a command)")
        return None, None
    return None, sink.uri


__all__ = ["API_VERSION", "KIND", "PREFIX", "is_pingsource", "read_pingsource"]
