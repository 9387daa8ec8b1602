"""Routes as manifests for a cluster: Knative Broker/Trigger (:mod:`.knative`) and Dapr
Subscription/Resiliency (:mod:`.dapr`).

Each exporter returns ``(manifests, notes)``: plain dicts ready for ``yaml.safe_dump`` and one
line per setting the target cannot express (``route 'X': … cannot be expressed in …``), so nothing
a route says is dropped without a word. Secrets never reach either list: header values and signing
secrets are not exported at all, and every string of a route's manifest passes through
``Route.mask``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from evroute.routes.model import BUILTIN_DELIVERY, Route, RouteSet, Subscriber


def plain(value: Any) -> Any:
    """``value`` as plain dicts, lists and scalars (loaders may hand back their own mapping types,
    which ``yaml.safe_dump`` refuses)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def masked(value: Any, route: Route) -> Any:
    """``value`` (plain data) with every string passed through ``route.mask``."""
    if isinstance(value, dict):
        return {k: masked(v, route) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, route) for v in value]
    if isinstance(value, str):
        return route.mask(value)
    return value


def brokers_in_order(routeset: RouteSet) -> list[str]:
    """Every broker a route uses, in the order the routes first name them."""
    return list(dict.fromkeys(r.broker for r in routeset.routes))


def service_for(uri: str, services: Mapping[str, str]) -> tuple[str, str] | None:
    """The ``services:`` entry a resolved URI came from, and the part of the URI after it.

    The loader resolves ``subscriber.ref`` through ``services:`` into an absolute URI; this goes
    back the other way so an export can name the Kubernetes Service (or Dapr app) again. The
    longest matching base wins; ``None`` when no service is a prefix of ``uri``.
    """
    best: tuple[str, str] | None = None
    best_len = -1
    for name, base in services.items():
        if not isinstance(base, str) or not base:
            continue
        if uri == base or uri == base.rstrip("/"):
            rest = ""
        elif uri.startswith(base if base.endswith("/") else base + "/"):
            rest = uri[len(base) :].lstrip("/")
        else:
            continue
        if len(base) > best_len:
            best, best_len = (name, rest), len(base)
    return best


def url_path(uri: str) -> str:
    """Path (and query) of an absolute URI, ``/`` when it has none."""
    parts = urlsplit(uri)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def largest_backoff(route: Route) -> float:
    """The longest single wait the route's backoff policy produces before ``backoffMax``."""
    d = route.delivery
    if d.retry <= 0:
        return 0.0
    if d.backoff_policy == "linear":
        return d.backoff_delay * d.retry
    return float(d.backoff_delay * 2 ** (d.retry - 1))


def chosen(field: str, value: Any) -> bool:
    """True when a delivery setting is not evroute's built-in default, i.e. the routes file asked
    for it. Built-in defaults a target lacks are described once in docs/export.md rather than
    repeated as a warning on every route."""
    return bool(value != BUILTIN_DELIVERY[field])


def one_endpoint(route: Route) -> Route:
    """``route`` with a consumer group's ``uris`` narrowed to the first one: neither a Trigger nor
    a Subscription names several endpoints (the cluster balances over a Service's pods)."""
    if not route.subscriber.uris:
        return route
    return replace(route, subscriber=Subscriber(uri=route.subscriber.uris[0]))


def rate_text(route: Route) -> str:
    r = route.delivery.rate_limit
    assert r is not None
    from evroute.durations import format_duration

    return f"rateLimit: {{rate: {r.rate}, per: {format_duration(r.per)}, burst: {r.burst}}}"


def dump_stream(manifests: Sequence[Mapping[str, Any]]) -> str:
    """A ``---``-separated YAML stream, keys in the order the exporters build them."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # A multi-line JSONata expression is written as a block, the way a user writes it.
        style = "|" if "\n" in value and value == value.rstrip(" ") and "\t" not in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text)
    return yaml.dump_all(
        [plain(m) for m in manifests],
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=10_000,  # a CEL match stays on one line instead of folding at 80 columns
    )


__all__ = [
    "brokers_in_order",
    "chosen",
    "dump_stream",
    "largest_backoff",
    "masked",
    "one_endpoint",
    "plain",
    "rate_text",
    "service_for",
    "url_path",
]
