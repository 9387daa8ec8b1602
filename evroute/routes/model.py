"""Routes as values: frozen dataclasses built by :mod:`evroute.routes.load`.

Delivery settings merge field by field, lowest first:
built-in defaults < ``defaults.delivery`` < the Knative Broker's ``spec.delivery`` < the route's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evroute.filters.matcher import Matcher, match_all

if TYPE_CHECKING:
    from evroute.transform import Transform

# Built-in delivery defaults (SPEC 3.1), in seconds where they are durations.
BUILTIN_DELIVERY: dict[str, Any] = {
    "retry": 3,
    "backoffPolicy": "exponential",
    "backoffDelay": 1.0,
    "backoffMax": 60.0,
    "timeout": 30.0,
    "retryAfterMax": 60.0,
    "deadLetterSink": None,
    "format": "binary",
    "ordering": "unordered",
    "concurrency": 32,
    "circuitBreaker": None,
    "rateLimit": None,
    "endpointCooldown": 10.0,
}
DEFAULT_DUPLICATE_WINDOW = 120.0  # JetStream dedup window (2m, the server's default)
DEFAULT_MAX_EVENT_BYTES = 1_048_576
RETRY_FOREVER = 2**31 - 1  # Dapr's maxRetries -1: retry until it succeeds

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent


@dataclass(frozen=True, slots=True)
class PathRule:
    """A Dapr routing rule: events ``match`` accepts (None: every event) go to ``path``."""

    match: Matcher | None = field(compare=False)  # compiled per load; ``source`` says what it is
    path: str = ""
    source: str = ""  # the CEL as written, for export and messages


# Where the worker's ingress token may live: never passed on to a command subscriber.
INGRESS_TOKEN_VARS = frozenset({"EVROUTE_TOKEN"})


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Where a route delivers: an absolute http(s) ``uri``, several ``uris`` sharing the
    deliveries (competing consumers), or a ``command`` argv (never a shell).

    With ``rules`` (a Dapr Subscription's ``routes``), ``uri`` is the app's base URL and each
    event goes to the path of the first rule that matches it, joined to that base."""

    uri: str | None = None
    command: tuple[str, ...] | None = None
    cwd: str | None = None  # the routes file's folder, for commands
    uris: tuple[str, ...] = ()  # competing consumers: each attempt goes to one of them
    rules: tuple[PathRule, ...] = ()
    # A command's environment: with ``env`` only those names (the route's ``env:`` list), else
    # the worker's own without ``hidden_env`` (the ingress token, every variable a route expands).
    env: tuple[str, ...] | None = None
    hidden_env: frozenset[str] = frozenset()

    def describe(self) -> str:
        if self.uris:
            return ", ".join(self.uris)
        if self.uri is not None:
            return self.uri if not self.rules else f"{self.uri} ({len(self.rules)} path rules)"
        return " ".join(self.command or ())

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every HTTP endpoint: the one ``uri``, or the ``uris`` of a consumer group."""
        if self.uris:
            return self.uris
        return () if self.uri is None else (self.uri,)

    def for_event(self, event: CloudEvent) -> Subscriber | None:
        """The subscriber this event is sent to: the first matching rule's path, or None."""
        if not self.rules:
            return self
        for rule in self.rules:
            if rule.match is None or rule.match.matches_event(event):
                return Subscriber(uri=join_path(self.uri or "", rule.path))
        return None


def join_path(base: str, path: str) -> str:
    """A Dapr app path under the app's base URL (Dapr calls ``http://app:port/<path>``)."""
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    consecutive_failures: int
    cooldown: float


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` attempts per ``per`` seconds, at most ``burst`` at once."""

    rate: int
    per: float
    burst: int


@dataclass(frozen=True, slots=True)
class Delivery:
    retry: int = 3
    backoff_policy: str = "exponential"  # exponential | linear
    backoff_delay: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 30.0
    retry_after_max: float = 60.0
    dead_letter_sink: Subscriber | None = None
    format: str = "binary"  # binary | json
    ordering: str = "unordered"  # unordered | ordered
    concurrency: int = 32
    circuit_breaker: CircuitBreaker | None = None
    rate_limit: RateLimit | None = None
    endpoint_cooldown: float = 10.0  # an endpoint failing with 5xx / no answer is skipped this long
    # How the subscriber's answer is judged: "knative" (SPEC 5.1) or "dapr" (Dapr's contract).
    contract: str = "knative"
    backoff_multiplier: float = 2.0  # exponential growth per retry (Dapr's exponential: 1.5)

    @property
    def ordered(self) -> bool:
        return self.ordering == "ordered"


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    broker: str = "default"
    subscriber: Subscriber = field(default_factory=Subscriber)
    delivery: Delivery = field(default_factory=Delivery)
    filter: Mapping[str, str] = field(default_factory=dict)  # Knative filter.attributes
    filters: tuple[Any, ...] = ()  # Knative SubscriptionsAPI dialect items, as written
    matcher: Matcher = field(default_factory=match_all, compare=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    signing_secret: str | None = None
    start: str = "latest"  # latest | earliest
    paused: bool = False
    secrets: frozenset[str] = frozenset()  # expanded ${VAR} values and header values, masked in every output
    env: tuple[str, ...] | None = None  # names a command subscriber is given (None: all but secrets)
    line: int = field(default=0, compare=False)  # where it is written: moving it changes nothing
    transform: Transform | None = None  # JSONata reshaping before delivery (evroute.transform)
    pingsource: str | None = None  # made for the PingSource of this name (its uri sink)
    dead_letter_topic: str | None = None  # Dapr: dead letters are also published to this topic

    def mask(self, text: str) -> str:
        """``text`` with every secret of this route replaced by ``***``."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text

    def mask_bytes(self, body: bytes | None) -> bytes | None:
        """``body`` (a response kept for people to read) with every secret replaced by ``***``."""
        if not body or not self.secrets:
            return body
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                body = body.replace(secret.encode("utf-8"), b"***")
        return body


@dataclass(frozen=True, slots=True)
class Settings:
    retention: float | None = None  # seconds; None keeps events forever
    durability: str = "normal"  # normal | full
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    tracing_endpoint: str | None = None  # OTLP/HTTP base URL; the OTEL_EXPORTER_OTLP_* variables win
    nats_replicas: int = 1  # settings.nats.replicas: copies of each JetStream stream
    nats_duplicate_window: float = DEFAULT_DUPLICATE_WINDOW  # settings.nats.duplicateWindow


@dataclass(frozen=True, slots=True)
class PingSource:
    """A Knative ``sources.knative.dev/v1`` PingSource: a fixed event on a cron schedule, sent
    into a broker (``broker``) or straight to ``uri``."""

    name: str
    namespace: str
    schedule: str = "* * * * *"
    timezone: str | None = None
    content_type: str | None = None
    data: bytes | None = None
    base64: bool = False  # written as dataBase64 (kept for export)
    broker: str | None = None
    uri: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)  # spec.ceOverrides.extensions
    line: int = field(default=0, compare=False)

    @property
    def source(self) -> str:
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


@dataclass(frozen=True, slots=True)
class RouteSet:
    """Everything one routes file declares."""

    routes: tuple[Route, ...] = ()
    settings: Settings = field(default_factory=Settings)
    services: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None
    notes: tuple[str, ...] = ()  # warnings and ignored documents, for `routes check`
    resolved: bool = True  # False: the structure only (variables as written, programs not looked up)
    sources: tuple[PingSource, ...] = ()  # Knative PingSource documents

    def by_name(self) -> dict[str, Route]:
        return {r.name: r for r in self.routes}

    def get(self, name: str) -> Route | None:
        return self.by_name().get(name)
