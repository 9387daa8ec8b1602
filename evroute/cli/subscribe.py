"""``evroute subscribe``: add, list, remove, pause, resume and reset routes.

The routes file is edited in place, keeping every comment and the layout of everything
else (see :mod:`evroute.routes.edit`); cursors live in the database.
"""

from __future__ import annotations

import os
from typing import Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, open_store


@click.group()
def subscribe() -> None:
    """Add, list, remove, pause, resume and reset routes (Knative Triggers).

    \b
      evroute subscribe add inventory --sink http://127.0.0.1:8081/ --filter type=order.placed
      evroute subscribe list
      evroute subscribe reset inventory --to earliest
    """


@subscribe.command("add")
@click.argument("name")
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    metavar="URL",
    help="HTTP subscriber: events are POSTed here. Repeat it for a consumer group: each event goes "
    "to one of them (fewest in flight, failing ones skipped for a while).",
)
@click.option(
    "--command", "command", metavar="CMD", help="Command subscriber, e.g. 'python3 handle.py' (no shell)."
)
@click.option("--broker", default="default", show_default=True, help="The broker to subscribe to.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Exact attribute match (repeatable; all must hold).",
)
@click.option("--cesql", metavar="EXPR", help="A CloudEvents SQL filter, e.g. \"subject LIKE 'eu-%'\".")
@click.option(
    "--cel",
    metavar="EXPR",
    help="A CEL filter over attributes and JSON data (Dapr's language), e.g. 'event.data.amount > 100'.",
)
@click.option("--retry", type=click.IntRange(min=0), help="Retries after the first attempt.")
@click.option("--backoff-policy", type=click.Choice(["exponential", "linear"]), help="How waits grow.")
@click.option("--backoff-delay", metavar="DURATION", help="First wait, e.g. PT0.5S or 500ms.")
@click.option("--timeout", metavar="DURATION", help="Per attempt, e.g. PT10S.")
@click.option("--dead-letter", metavar="URL", help="Where events go after the last attempt.")
@click.option("--ordered", is_flag=True, help="Deliver one at a time, in order (head-of-line).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Deliveries in flight (unordered).")
@click.option("--rate", metavar="N/DURATION", help="At most N deliveries per duration, e.g. 50/s or 1000/1m.")
@click.option(
    "--from", "start", type=click.Choice(["latest", "earliest"]), help="Where the new route starts."
)
@click.option(
    "--env",
    "env_names",
    multiple=True,
    metavar="NAME",
    help="Pass only these variables to the --command (repeatable; CE_* and EVROUTE_* always).",
)
def add(
    name: str,
    sinks: tuple[str, ...],
    command: str | None,
    broker: str,
    filters: tuple[str, ...],
    cesql: str | None,
    cel: str | None,
    retry: int | None,
    backoff_policy: str | None,
    backoff_delay: str | None,
    timeout: str | None,
    dead_letter: str | None,
    ordered: bool,
    concurrency: int | None,
    rate: str | None,
    start: str | None,
    env_names: tuple[str, ...],
) -> None:
    """Add route NAME to the routes file, keeping its comments and layout.

    Refuses a name that exists (exit 2). The whole resulting file is validated before it is
    written; a running worker picks the route up within a second.

    \b
      evroute subscribe add payment --sink http://127.0.0.1:8082/ --filter type=order.placed \\
              --retry 5 --dead-letter http://127.0.0.1:8089/payment-dlq
      evroute subscribe add audit --command 'python3 audit.py' --cesql "subject LIKE 'eu-%'" --from earliest
      evroute subscribe add orders --sink http://10.0.0.1:8080/ --sink http://10.0.0.2:8080/ --rate 50/s
      evroute subscribe add large --sink http://127.0.0.1:8083/ --cel 'event.data.amount > 100'
      evroute subscribe add mailer --command 'python3 mail.py' --env SMTP_PASSWORD --env PATH
    """
    from evroute.routes.edit import add_route
    from evroute.store.base import starts

    obj = ctx_obj()
    if len(sinks) > 1 and command is None:
        sink: str | None = None
    else:
        sink = sinks[0] if sinks else None
    entry = build_entry(
        obj.routes, name, sink, command, broker, filters, cesql, retry, backoff_policy,
        backoff_delay, timeout, dead_letter, ordered, concurrency, start, env_names, cel=cel,
        sinks=sinks if len(sinks) > 1 else (), rate=rate,
    )  # fmt: skip
    routeset = add_route(obj.routes, entry)
    with open_store() as store:
        store.ensure_routes(starts(routeset.routes))
    route = routeset.by_name()[name]
    click.echo(
        f"added route {name} to {obj.routes}: broker {route.broker}, filter {route.matcher.description} "
        f"-> {route.mask(route.subscriber.describe())} (starts at {route.start})"
    )


def build_entry(
    routes_path: str,
    name: str,
    sink: str | None,
    command: str | None,
    broker: str,
    filters: tuple[str, ...],
    cesql: str | None,
    retry: int | None,
    backoff_policy: str | None,
    backoff_delay: str | None,
    timeout: str | None,
    dead_letter: str | None,
    ordered: bool,
    concurrency: int | None,
    start: str | None,
    env_names: tuple[str, ...] = (),
    cel: str | None = None,
    *,
    sinks: tuple[str, ...] = (),
    rate: str | None = None,
) -> dict[str, Any]:
    """The route as routes.yaml writes it; every flag is checked here, so a bad one is named."""
    import shlex

    from evroute.durations import parse_duration
    from evroute.errors import InvalidDuration, InvalidInput
    from evroute.filters.attributes import ATTRIBUTE_NAME
    from evroute.filters.cesql import parse
    from evroute.routes.fields import NAME, NAME_RULE, VAR_NAME, find_program, is_http_uri

    if not NAME.match(name):
        raise InvalidInput(f"NAME {name!r} is invalid ({NAME_RULE}, at most 63 characters)")
    if not NAME.match(broker):
        raise InvalidInput(f"--broker {broker!r} is invalid ({NAME_RULE})")
    if (sink is None and not sinks) == (command is None):
        raise InvalidInput("give exactly one of --sink URL or --command CMD")
    entry: dict[str, Any] = {"name": name}
    if broker != "default":
        entry["broker"] = broker
    attributes: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not ATTRIBUTE_NAME.match(key):
            raise InvalidInput(
                f"--filter {item!r} must be KEY=VALUE with a lowercase attribute name, like type=order.placed"
            )
        attributes[key] = value
    if cesql is not None or cel is not None:
        expressions: list[dict[str, str]] = []
        if cesql is not None:
            try:
                parse(cesql)
            except InvalidInput as exc:
                raise InvalidInput(f"--cesql: {exc.message}") from None
            expressions.append({"cesql": cesql})
        if cel is not None:
            from evroute.filters import cel as cel_filter

            problem = cel_filter.check(cel)
            if problem is not None:
                raise InvalidInput(f"--cel: {problem}")
            expressions.append({"cel": cel})
        # filters overrides filter, so the attribute matches join the expressions there.
        exact = [
            {"exact": {k: v}} if v else {"cesql": f"EXISTS {k} AND {k} <> ''"} for k, v in attributes.items()
        ]
        entry["filters"] = [*exact, *expressions]
    elif attributes:
        entry["filter"] = attributes
    if sinks:
        for uri in sinks:
            if not is_http_uri(uri):
                raise InvalidInput(
                    f"--sink {uri!r} is not an absolute http(s) URL (like http://127.0.0.1:8081/)"
                )
        if len(set(sinks)) != len(sinks):
            raise InvalidInput("--sink: each endpoint once (a URL is given twice)")
        entry["subscriber"] = {"uris": list(sinks)}
    elif sink is not None:
        if not is_http_uri(sink):
            raise InvalidInput(
                f"--sink {sink!r} is not an absolute http(s) URL (like http://127.0.0.1:8081/)"
            )
        entry["subscriber"] = sink
    else:
        try:
            argv = shlex.split(command or "")
        except ValueError as exc:
            raise InvalidInput(f"--command cannot be split into words: {exc}") from None
        folder = os.path.dirname(os.path.abspath(routes_path))
        if not argv or find_program(argv[0], folder) is None:
            program = argv[0] if argv else ""
            raise InvalidInput(f"--command: program {program!r} not found (on PATH, or relative to {folder})")
        entry["subscriber"] = {"command": argv}
    delivery: dict[str, Any] = {}
    if retry is not None:
        delivery["retry"] = retry
    if backoff_policy is not None:
        delivery["backoffPolicy"] = backoff_policy
    durations: list[tuple[str, str, str | None]] = [
        ("--backoff-delay", "backoffDelay", backoff_delay),
        ("--timeout", "timeout", timeout),
    ]
    for flag, key, raw in durations:
        if raw is None:
            continue
        try:
            seconds = parse_duration(raw)
        except InvalidDuration as exc:
            raise InvalidInput(f"{flag}: {exc.message}") from None
        if key == "timeout" and seconds <= 0:
            raise InvalidInput("--timeout must be longer than zero")
        delivery[key] = raw
    if dead_letter is not None:
        if not is_http_uri(dead_letter):
            raise InvalidInput(f"--dead-letter {dead_letter!r} is not an absolute http(s) URL")
        delivery["deadLetterSink"] = {"uri": dead_letter}
    if ordered:
        delivery["ordering"] = "ordered"
    if concurrency is not None:
        delivery["concurrency"] = concurrency
    if rate is not None:
        delivery["rateLimit"] = parse_rate(rate)
    if delivery:
        entry["delivery"] = delivery
    if start is not None:
        entry["start"] = start
    if env_names:
        if command is None:
            raise InvalidInput(
                "--env applies to --command subscribers only (an HTTP subscriber gets no environment)"
            )
        for var in env_names:
            if not VAR_NAME.match(var):
                raise InvalidInput(
                    f"--env {var!r} is not a variable name (allowed: letters, digits and _, not starting with a digit)"
                )
        entry["env"] = list(dict.fromkeys(env_names))
    return entry


def parse_rate(text: str) -> dict[str, Any]:
    """``--rate N/DURATION`` as ``rateLimit``: ``50/s`` → ``{rate: 50, per: 1s}``."""
    from evroute.durations import parse_duration
    from evroute.errors import InvalidDuration, InvalidInput

    count, sep, per = text.partition("/")
    shape = f"--rate {text!r} is not N/DURATION (like 50/s, 1000/1m or 5/PT10S)"
    if not sep or not count.strip().isdigit():
        raise InvalidInput(shape)
    per = per.strip()
    if per in ("s", "m", "h", "d", "ms"):
        per = "1" + per
    try:
        seconds = parse_duration(per)
    except InvalidDuration:
        raise InvalidInput(shape) from None
    if int(count) < 1:
        raise InvalidInput(f"--rate {text!r}: the count must be at least 1")
    if seconds <= 0:
        raise InvalidInput(f"--rate {text!r}: the duration must be longer than zero")
    return {"rate": int(count), "per": per}


@subscribe.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON (secrets masked).")
def list_(as_json: bool) -> None:
    """List the routes of the routes file (secrets shown as ***).

    \b
      evroute subscribe list
      evroute subscribe list --json
    """
    from evroute.routes.load import load_routes
    from evroute.routes.show import HEADERS, route_dict, route_row

    routeset = load_routes(ctx_obj().routes, resolve=False)
    if as_json:
        echo_json([route_dict(r) for r in routeset.routes])
    else:
        echo_table([route_row(r) for r in routeset.routes], HEADERS)


@subscribe.command("remove")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also drop its cursor, scheduled retries and dead letters.")
def remove(name: str, purge: bool) -> None:
    """Remove route NAME from the routes file.

    Its cursor is kept, so adding the name back resumes where it stopped; --purge drops the
    cursor, its scheduled retries and its dead letters too.

    \b
      evroute subscribe remove notification
      evroute subscribe remove notification --purge
    """
    from evroute.errors import NotFound
    from evroute.routes.edit import remove_route

    obj = ctx_obj()
    try:
        remove_route(obj.routes, name)
        removed = True
    except NotFound:
        if not purge:
            raise
        removed = False
    if not purge:
        click.echo(f"removed route {name} from {obj.routes} (its cursor is kept: adding it back resumes)")
        return
    if obj.store.kind == "sqlite" and not os.path.exists(obj.store.path):
        if not removed:
            raise NotFound(f"route '{name}' is neither in {obj.routes} nor in the database")
        click.echo(f"removed route {name} from {obj.routes} (no database to purge)")
        return
    with open_store() as store:
        if not removed and store.cursor(name) is None:
            raise NotFound(f"route '{name}' is neither in {obj.routes} nor in the database")
        store.forget(name)
    where = f"removed route {name} from {obj.routes} and purged" if removed else f"purged route {name}:"
    click.echo(f"{where} its cursor, scheduled retries and dead letters")


@subscribe.command("pause")
@click.argument("name")
def pause(name: str) -> None:
    """Pause route NAME: events wait behind its cursor until it is resumed.

    Writes `paused: true` (on a Knative Trigger, the annotation `evroute.dev/paused: "true"`).
    """
    from evroute.routes.edit import set_paused

    changed = set_paused(ctx_obj().routes, name, True)
    click.echo(f"route {name} paused" if changed else f"route {name} was already paused")


@subscribe.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Resume route NAME: it delivers what waited while it was paused."""
    from evroute.routes.edit import set_paused

    changed = set_paused(ctx_obj().routes, name, False)
    click.echo(f"route {name} resumed" if changed else f"route {name} was not paused")


@subscribe.command("reset")
@click.argument("name")
@click.option(
    "--to", "to", required=True, metavar="earliest|latest|SEQ|TIMESTAMP", help="Where the cursor goes."
)
@click.option(
    "--drop-retries",
    is_flag=True,
    help="Also drop the route's scheduled retries (kept by default; dead-letter replays always stay).",
)
def reset(name: str, to: str, drop_retries: bool) -> None:
    """Move route NAME's cursor: replay (earliest, an older SEQ or time) or skip (latest).

    SEQ is the first event delivered next (at most one past the last seq); TIMESTAMP (RFC 3339)
    the first event published at or after it. A running worker notices and continues from
    there. Retries already scheduled still run unless --drop-retries.

    \b
      evroute subscribe reset payment --to earliest
      evroute subscribe reset payment --to 2026-11-26T10:00:00Z
      evroute subscribe reset payment --to latest --drop-retries
    """
    from evroute.errors import EvrouteError
    from evroute.routes.load import load_routes
    from evroute.store.base import starts

    obj = ctx_obj()
    with open_store() as store:
        try:  # a route written but never seen by a command yet has no cursor: create it first
            routeset = load_routes(obj.routes, resolve=False)
            store.ensure_routes(starts(routeset.routes))
        except EvrouteError:
            pass
        waiting = store.scheduled(name)
        position = store.reset(name, to, drop_retries=drop_retries)
    line = f"route {name}: cursor at seq {position}; the next event delivered is the first after it"
    if waiting:
        plural = "retry" if waiting == 1 else "retries"
        if drop_retries:
            line += f"; {waiting} scheduled {plural} dropped"
        else:
            line += f"; {waiting} scheduled {plural} kept (--drop-retries drops them)"
    click.echo(line)
