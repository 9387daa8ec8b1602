"""Load a routes file: a YAML stream of evroute documents and Knative Trigger/Broker documents.

Loading succeeds completely or raises :class:`~evroute.errors.RoutesInvalid` listing every
problem, each as ``routes.yaml:LINE:COL: route 'NAME': field: what is wrong (what is allowed)``.

An evroute document holds any of ``services`` (names for Knative refs), ``defaults``
(``delivery`` merged under every route), ``settings`` and ``routes``; several may appear in
one stream (``services`` and ``routes`` add up, ``defaults`` and ``settings`` appear once).
Knative documents are read by :mod:`evroute.routes.knative`, Dapr Subscription and Resiliency
documents by :mod:`evroute.routes.dapr`. Delivery settings merge field by field: built-in <
``defaults.delivery`` < the Broker's ``spec.delivery`` (for every route on that broker) < a Dapr
Resiliency's inbound policies for that pubsub < the route's own < annotations.

::

    >>> routeset = load_routes("routes.yaml")
    >>> [r.name for r in routeset.routes]
    ['inventory-trigger', 'payment-trigger']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

from evroute.errors import InvalidInput, RoutesInvalid
from evroute.filters import as_text, check, compile_filters, empty_expressions
from evroute.routes import dapr, knative
from evroute.routes.fields import Checker, RawRoute, Where, show
from evroute.routes.model import (
    DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_MAX_EVENT_BYTES,
    INGRESS_TOKEN_VARS,
    Delivery,
    PingSource,
    Route,
    RouteSet,
    Settings,
    Subscriber,
)
from evroute.routes.sources import PREFIX, is_pingsource, read_pingsource
from evroute.routes.transforms import Transforms, is_eventtransform, refers_to_transform
from evroute.routes.yamltree import Doc, MalformedYaml, parse_stream

DOC_KEYS = ("services", "defaults", "settings", "routes")
ROUTE_KEYS = (
    "name",
    "broker",
    "filter",
    "filters",
    "subscriber",
    "delivery",
    "headers",
    "signing",
    "start",
    "paused",
    "transform",
    "env",
)
SETTINGS_KEYS = ("retention", "durability", "maxEventBytes", "tracing", "nats")
NATS_KEYS = ("replicas", "duplicateWindow")

Layer = tuple[dict[str, Any], frozenset[str]]
# Expanded values this short are not masked: hiding "1" or "80" would garble every line it
# appears in while protecting nothing.
MIN_SECRET = 3


def load_routes(path: str, env: Mapping[str, str] | None = None, *, resolve: bool = True) -> RouteSet:
    """The routes of the file at ``path``; ``${VAR}`` expands from ``env`` (default os.environ).

    ``resolve=False`` reads the structure (names, brokers, start, filters) the same from any
    shell: an unset variable stays as written (``${VAR}``) and programs are not looked up.
    Commands that do not deliver use it, so a variable only the worker has never stops them."""
    try:
        with open(path, "rb") as fh:  # closed explicitly: a refcount close still warns (ResourceWarning)
            raw = fh.read()
    except FileNotFoundError:
        raise InvalidInput(
            f"routes file {path} not found (create it with `evroute init` or `evroute subscribe add`, "
            "or point --routes / $EVROUTE_ROUTES at it)"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"routes file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RoutesInvalid([f"{path}:{line}:1: the file is not UTF-8 text (save it as UTF-8)"]) from None
    return load_routes_text(text, path, env, resolve=resolve)


class AnyVariable(Mapping[str, str]):
    """An environment in which every ``${NAME}`` is set (to a placeholder): for reading a routes
    document's structure where its secrets are not, and need not be (the workers expand them)."""

    def __getitem__(self, key: str) -> str:
        return "set-on-the-worker"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def load_routes_text(
    text: str, path: str, env: Mapping[str, str] | None = None, *, resolve: bool = True
) -> RouteSet:
    """The routes written in ``text``; ``path`` names the file in messages and anchors commands."""
    return _Loader(text, path, os.environ if env is None else env, resolve).run()


class _Loader:
    def __init__(self, text: str, path: str, env: Mapping[str, str], resolve: bool) -> None:
        self.text = text
        self.c = Checker(path, env, resolve)
        self.defaults: Layer = ({}, frozenset())
        self.brokers: dict[str, Layer] = {}
        self.seen: dict[str, int] = {}  # route name -> line
        self.once: dict[str, int] = {}  # defaults/settings -> line
        self.transforms = Transforms(self.c, text)
        self.sources: list[PingSource] = []
        self.source_secrets: dict[str, set[str]] = {}
        self.resiliency = dapr.Resiliency()  # Dapr Resiliency policies per pubsub (broker)

    def run(self) -> RouteSet:
        c = self.c
        try:
            docs = parse_stream(self.text)
        except MalformedYaml as exc:
            raise RoutesInvalid([f"{c.path}:{exc.pos[0]}:{exc.pos[1]}: {exc.message}"]) from None
        ours: list[Doc] = []
        for doc in docs:
            for pos, what in doc.problems:
                c.raw(pos, "", what)
            if doc.data is None:
                continue
            if not isinstance(doc.data, Mapping):
                c.problem(
                    Where(doc, ()),
                    "",
                    f"a document must be a mapping, got {show(doc.data)} (allowed: services/defaults/"
                    f"settings/routes, or a Knative Trigger or Broker)",
                )
            elif not knative.is_knative(doc.data):
                ours.append(doc)
        # Services first: a ref may point to a service defined in any document of the stream.
        for doc in ours:
            self.services(doc)
        settings = Settings()
        for doc in ours:
            c.keys(doc.data, DOC_KEYS, Where(doc, ()), "")
            if "defaults" in doc.data and self.first("defaults", doc):
                self.read_defaults(doc)
            if "settings" in doc.data and self.first("settings", doc):
                settings = self.settings(doc)
        raws: list[RawRoute] = []
        for doc in docs:
            if not isinstance(doc.data, Mapping) or not knative.is_knative(doc.data):
                continue
            kind = knative.kind_of(doc.data)
            if kind == "Broker":
                self.broker(doc)
            elif is_eventtransform(doc.data):
                self.transforms.read(doc)
            elif is_pingsource(doc.data):
                self.pingsource(doc)
            elif dapr.kind_of(doc.data) == "Resiliency":
                self.resiliency.read(c, doc)
            elif kind is None and dapr.kind_of(doc.data) is None:
                knative.ignored(c, doc)
        for doc in docs:
            if doc in ours:
                raws += self.evroute_routes(doc)
            elif isinstance(doc.data, Mapping) and knative.kind_of(doc.data) == "Trigger":
                trigger = knative.read_trigger(c, doc)
                if trigger is not None:
                    raws.append(trigger)
            elif isinstance(doc.data, Mapping) and dapr.kind_of(doc.data) == "Subscription":
                raws += dapr.read_subscription(c, doc)
        routes = [r for r in (self.route(raw) for raw in raws) if r is not None]
        routes += self.source_routes()
        hidden = frozenset(c.variables) | INGRESS_TOKEN_VARS
        routes = [_commands_get_env(r, hidden) for r in routes]
        if c.problems:
            raise RoutesInvalid([text for _, text in sorted(c.problems, key=lambda p: p[0])])
        services = {name: uri for name, (uri, _) in c.services.items()}
        return RouteSet(
            tuple(routes), settings, services, c.path, tuple(c.notes), c.resolve, sources=tuple(self.sources)
        )

    def first(self, key: str, doc: Doc) -> bool:
        if key in self.once:
            self.c.problem(
                Where(doc, (key,)),
                "",
                f"'{key}' is set more than once (first at line {self.once[key]}; keep one)",
                True,
            )
            return False
        self.once[key] = doc.pos((key,), key=True)[0]
        return True

    # -------------------------------------------------------------- evroute documents

    def services(self, doc: Doc) -> None:
        c = self.c
        at = Where(doc, ("services",))
        body = c.mapping(doc.data.get("services"), at, "", "service-name: http://…")
        for name, raw in (body or {}).items():
            if name in c.services:
                c.problem(at / name, "", f"service '{name}' is defined twice (keep one)", True)
                continue
            if not isinstance(raw, str):
                c.problem(at / name, "", f"must be a URI, got {show(raw)} (allowed: http://HOST[:PORT]/PATH)")
                continue
            secrets: set[str] = set()
            expanded = c.expand(raw, at / name, "", secrets)
            if expanded is not None and c.http_uri(raw, expanded, at / name, ""):
                c.services[name] = (expanded, frozenset(secrets))

    def read_defaults(self, doc: Doc) -> None:
        at = Where(doc, ("defaults",))
        body = self.c.mapping(doc.data.get("defaults"), at, "", "delivery: {…}")
        if body and self.c.keys(body, ("delivery",), at, ""):
            self.defaults = self.c.delivery(body.get("delivery"), at / "delivery", "")

    def settings(self, doc: Doc) -> Settings:
        c = self.c
        at = Where(doc, ("settings",))
        body = c.mapping(doc.data.get("settings"), at, "", "retention, durability, maxEventBytes, nats")
        if not body:
            return Settings()
        c.keys(body, SETTINGS_KEYS, at, "")
        retention = None
        if body.get("retention") is not None:
            retention = c.duration(body["retention"], at / "retention", "", positive=True)
        durability = c.choice(
            body.get("durability", "normal"), ("normal", "full"), at / "durability", "", "durability"
        )
        size = DEFAULT_MAX_EVENT_BYTES
        if "maxEventBytes" in body:
            size = c.integer(body["maxEventBytes"], 1, at / "maxEventBytes", "") or DEFAULT_MAX_EVENT_BYTES
        replicas, window = 1, DEFAULT_DUPLICATE_WINDOW
        nats = c.mapping(body.get("nats"), at / "nats", "", "replicas, duplicateWindow")
        if nats:
            c.keys(nats, NATS_KEYS, at / "nats", "")
            if "replicas" in nats:
                replicas = c.integer(nats["replicas"], 1, at / "nats" / "replicas", "") or 1
                if replicas > 5:
                    c.problem(
                        at / "nats" / "replicas", "", f"must be 1 to 5 (JetStream's limit), got {replicas}"
                    )
            if nats.get("duplicateWindow") is not None:
                window = (
                    c.duration(nats["duplicateWindow"], at / "nats" / "duplicateWindow", "", positive=True)
                    or DEFAULT_DUPLICATE_WINDOW
                )
        return Settings(
            retention=retention,
            durability=durability or "normal",
            max_event_bytes=size,
            tracing_endpoint=self.tracing(body.get("tracing"), at / "tracing"),
            nats_replicas=replicas,
            nats_duplicate_window=window,
        )

    def tracing(self, value: object, at: Where) -> str | None:
        """``settings.tracing: {endpoint: http://collector:4318}``: where spans are exported."""
        c = self.c
        body = c.mapping(value, at, "", "endpoint: http://HOST:4318")
        if not body or not c.keys(body, ("endpoint",), at, ""):
            return None
        endpoint = body.get("endpoint")
        if endpoint is None:
            return None
        if not isinstance(endpoint, str):
            c.problem(at / "endpoint", "", f"must be an http(s) URL, got {show(endpoint)}")
            return None
        expanded = c.expand(endpoint, at / "endpoint", "", set())
        if expanded is None:
            return None
        return c.http_uri(endpoint, expanded, at / "endpoint", "")

    def evroute_routes(self, doc: Doc) -> list[RawRoute]:
        items = doc.data.get("routes")
        at = Where(doc, ("routes",))
        if items is None:
            return []
        if not isinstance(items, list):
            self.c.problem(at, "", f"must be a list of routes (- name: …), got {show(items)}")
            return []
        raws = []
        for i, item in enumerate(items):
            where = Where(doc, ("routes", i), root=2)
            name = item.get("name") if isinstance(item, Mapping) else None
            scope = f"route '{name}': " if isinstance(name, str) and name else f"routes[{i}]: "
            if not isinstance(item, Mapping):
                self.c.problem(where, scope, f"must be a mapping (name, subscriber, …), got {show(item)}")
                continue
            self.c.keys(item, ROUTE_KEYS, where, scope)
            values = {k: v for k, v in item.items() if k in ROUTE_KEYS}
            at_of = {k: where / k for k in values}
            filt = values.get("filter")
            # Knative's own spelling, filter: {attributes: {…}}, is accepted here too.
            if (
                isinstance(filt, Mapping)
                and list(filt) == ["attributes"]
                and isinstance(filt["attributes"], Mapping)
            ):
                values["filter"], at_of["filter"] = filt["attributes"], where / "filter" / "attributes"
            raws.append(RawRoute(values=values, at=at_of, where=where, scope=scope))
        return raws

    def pingsource(self, doc: Doc) -> None:
        secrets: set[str] = set()
        source = read_pingsource(self.c, doc, secrets)
        if source is None:
            return
        for other in self.sources:
            if other.name == source.name:
                self.c.problem(
                    Where(doc, ("metadata", "name")),
                    f"pingsource '{source.name}': ",
                    f"defined twice (first at line {other.line}; keep one)",
                )
                return
        self.sources.append(source)
        self.source_secrets[source.name] = secrets

    def source_routes(self) -> list[Route]:
        """The route that delivers each uri-sink PingSource's ticks (see routes/sources.py)."""
        made = []
        for source in self.sources:
            if source.uri is None:
                continue
            name = PREFIX + source.name
            if name in self.seen:
                self.c.raw(
                    (source.line, 1),
                    f"pingsource '{source.name}': ",
                    f"its sink is delivered by route '{name}', which the file also defines "
                    f"(line {self.seen[name]}); rename one",
                )
                continue
            fields, used = self.defaults
            made.append(
                Route(
                    name=name,
                    broker=name,
                    subscriber=Subscriber(uri=source.uri),
                    delivery=dataclasses.replace(Delivery(), **fields),
                    start="latest",
                    secrets=frozenset(
                        s for s in (*used, *self.source_secrets[source.name]) if len(s) >= MIN_SECRET
                    ),
                    line=source.line,
                    pingsource=source.name,
                )
            )
        return made

    def broker(self, doc: Doc) -> None:
        found = knative.read_broker(self.c, doc)
        if found is None:
            return
        name, name_at, delivery, delivery_at = found
        scope = f"broker '{name}': "
        if self.c.name(name, name_at, scope) is None:
            return
        if name in self.brokers:
            self.c.problem(name_at, scope, "this Broker is defined twice (keep one)")
            return
        self.brokers[name] = self.c.delivery(delivery, delivery_at, scope)

    # -------------------------------------------------------------- one route

    def route(self, raw: RawRoute) -> Route | None:
        c, v, at, scope = self.c, raw.values, raw.at, raw.scope
        before = len(c.problems)
        line = raw.where.pos()[0]
        name = v.get("name")
        if name is None:
            c.problem(raw.where, scope, "name is required (allowed: ^[a-z0-9][a-z0-9-]{0,62}$)")
        elif c.name(name, at["name"], scope) is not None:
            if name in self.seen:
                c.problem(
                    at["name"],
                    scope,
                    f"duplicate name (first at line {self.seen[name]}; names must be unique in the file)",
                )
            else:
                self.seen[name] = line
        broker = "default"
        if v.get("broker") is not None:
            broker = c.name(v["broker"], at["broker"], scope) or "default"

        filt, filters = v.get("filter"), v.get("filters")
        filter_problems = check(filt, filters)
        for problem in filter_problems:
            head, *rest = problem.path
            where = at[str(head)]
            for part in rest:
                where = where / part
            c.problem(where, scope, problem.message, problem.key)
        if not filter_problems:
            for _, *rest in empty_expressions(filters):
                where = at["filters"]
                for part in rest:
                    where = where / part
                c.note(
                    where,
                    scope,
                    f"{where.label}: an empty expression is Knative's no filter (it lets every event through)",
                )
        if filt and filters:
            c.note(
                at["filters"], scope, "both filter and filters are set; filters is used and filter is ignored"
            )

        secrets: set[str] = set()
        subscriber = None
        transform = None
        if v.get("subscriber") is None:
            c.problem(
                raw.where,
                scope,
                "subscriber is required (allowed: a URI, {uri: …}, {command: […]} or {ref: …})",
            )
        elif refers_to_transform(v["subscriber"]):
            if "transform" in v:
                c.problem(
                    at["transform"],
                    scope,
                    "both transform and a subscriber ref to an EventTransform are set (allowed: one of them)",
                )
            else:
                found = self.transforms.resolve(v["subscriber"], at["subscriber"], scope, secrets)
                subscriber, transform = found if found is not None else (None, None)
        else:
            subscriber = c.sink(v["subscriber"], at["subscriber"], scope, secrets, several=True)
        if "transform" in v:
            transform = self.transforms.route_transform(v["transform"], at["transform"], scope)

        layers = [
            self.defaults,
            self.brokers.get(broker, ({}, frozenset())),
            self.resiliency.layers.get(broker, ({}, frozenset())),
        ]
        if "delivery" in v:
            layers.append(c.delivery(v["delivery"], at["delivery"], scope))
        merged: dict[str, Any] = {}
        for fields, used in layers:
            merged.update(fields)
            secrets.update(used)
        merged.update(raw.overrides)
        headers = (
            c.headers(v.get("headers"), at.get("headers", raw.where), scope, secrets)
            if "headers" in v
            else {}
        )
        signing = c.signing(v["signing"], at["signing"], scope, secrets) if "signing" in v else None
        start = c.choice(
            v.get("start", "latest"), ("latest", "earliest"), at.get("start", raw.where), scope, "start"
        )
        paused = c.boolean(v.get("paused", False), at.get("paused", raw.where), scope)
        env = c.env_names(v["env"], at["env"], scope) if "env" in v else None
        if env is not None and subscriber is not None and subscriber.command is None:
            c.note(at["env"], scope, "env is ignored (it applies to command subscribers)")
        if len(c.problems) > before or subscriber is None or not isinstance(name, str):
            return None
        route = Route(
            name=name,
            broker=broker,
            subscriber=subscriber,
            delivery=dataclasses.replace(Delivery(), **merged),
            filter={k: as_text(x) for k, x in (filt or {}).items()},
            filters=tuple(filters or ()),
            matcher=compile_filters(filt or {}, filters or ()),
            headers=headers,
            signing_secret=signing,
            start=start or "latest",
            paused=bool(paused),
            secrets=frozenset(s for s in secrets if len(s) >= MIN_SECRET),
            env=env,
            line=line,
            transform=transform,
        )
        return raw.finish(route) if raw.finish is not None else route


def _commands_get_env(route: Route, hidden: frozenset[str]) -> Route:
    """``route`` with its command sinks told which environment to pass (SPEC 5.2)."""

    def fix(sink: Subscriber | None) -> Subscriber | None:
        if sink is None or sink.command is None:
            return sink
        return dataclasses.replace(sink, env=route.env, hidden_env=hidden)

    subscriber = fix(route.subscriber)
    dls = fix(route.delivery.dead_letter_sink)
    if subscriber is route.subscriber and dls is route.delivery.dead_letter_sink:
        return route
    delivery = dataclasses.replace(route.delivery, dead_letter_sink=dls)
    return dataclasses.replace(route, subscriber=subscriber or route.subscriber, delivery=delivery)
