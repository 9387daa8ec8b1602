"""``evroute routes check`` and ``evroute routes test``: validate routes.yaml, try an event on it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, open_store

if TYPE_CHECKING:
    from evroute.cloudevent import CloudEvent


@click.group()
def routes() -> None:
    """Check the routes file, and see which routes an event would reach.

    \b
      evroute routes check
      evroute routes test --type order.placed --source /shop
    """


@routes.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON.")
def check(as_json: bool) -> None:
    """Validate the routes file and print its routes; exit 2 listing every problem otherwise.

    New routes get their cursor here (at the end of the log for `start: latest`).

    \b
      evroute routes check
      evroute --routes shop.yaml routes check --json
    """
    from evroute.durations import format_duration
    from evroute.routes.load import load_routes
    from evroute.routes.show import HEADERS, route_dict, route_row
    from evroute.store.base import starts

    obj = ctx_obj()
    routeset = load_routes(obj.routes)
    with open_store() as store:
        created = store.ensure_routes(starts(routeset.routes))
    settings = routeset.settings
    sources = _sources(routeset)
    if as_json:
        echo_json(
            {
                "path": obj.routes,
                "routes": [route_dict(r) for r in routeset.routes],
                "settings": {
                    "retention": None if settings.retention is None else format_duration(settings.retention),
                    "durability": settings.durability,
                    "maxEventBytes": settings.max_event_bytes,
                },
                "notes": list(routeset.notes),
                "new_routes": created,
                "sources": sources,
            }
        )
        return
    count = len(routeset.routes)
    retention = "forever" if settings.retention is None else format_duration(settings.retention)
    click.echo(
        f"{obj.routes}: {count} route{'' if count == 1 else 's'}, valid "
        f"(durability {settings.durability}, maxEventBytes {settings.max_event_bytes}, retention {retention})"
    )
    if routeset.routes:
        echo_table([route_row(r) for r in routeset.routes], HEADERS)
    by_name = routeset.by_name()
    for name in created:
        click.echo(f"new route {name}: cursor created (start: {by_name[name].start})")
    for source in sources:
        sink = f"broker {source['sink']['broker']}" if "broker" in source["sink"] else source["sink"]["uri"]
        click.echo(
            f"pingsource {source['name']}: {source['schedule']} ({source['timezone'] or 'UTC'}) -> {sink}, "
            f"next at {source['next']}"
        )
    for note in routeset.notes:
        click.echo(f"note: {note}")


@routes.command("apply")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def apply(file: str | None) -> None:
    """Make FILE (default: the --routes file) the routes every worker of the store runs.

    On a NATS store the routes live in KV bucket EVROUTE_ROUTES and every worker applies a
    new revision within a second; on SQLite they are the --routes file. The file is checked
    first (nothing written on a problem) and written only if nobody changed the routes since
    they were read. New routes get their position now.

    \b
      evroute --store nats://127.0.0.1:4222 routes apply routes.yaml
    """
    from evroute.routes.apply import apply_routes, read_text

    obj = ctx_obj()
    source = file or obj.routes
    with open_store() as store:
        applied = apply_routes(store, read_text(source), source, obj.routes)
        where = store.url
    state = "unchanged" if applied.unchanged else "applied"
    click.echo(
        f"{state}: {len(applied.routes)} routes from {source} to {where} (revision {applied.revision})"
    )
    if applied.created:
        click.echo(f"new routes (position set now): {', '.join(applied.created)}")


def _sources(routeset: Any) -> list[dict[str, Any]]:
    """The file's PingSources with their next fire time (croniter is loaded only if there are any)."""
    if not routeset.sources:
        return []
    import time

    from evroute.clock import rfc3339
    from evroute.sources.ping import next_tick

    now = time.time()
    out = []
    for s in routeset.sources:
        masked = s.uri
        route = routeset.get(f"pingsource-{s.name}")
        if masked is not None and route is not None:
            masked = route.mask(masked)
        out.append(
            {
                "name": s.name,
                "namespace": s.namespace,
                "schedule": s.schedule,
                "timezone": s.timezone,
                "sink": {"broker": s.broker} if s.broker is not None else {"uri": masked},
                "next": rfc3339(next_tick(s, now)),
            }
        )
    return out


@routes.command("test")
@click.argument("event_file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--type", "type_", metavar="TYPE", help="Event type (instead of EVENT-FILE).")
@click.option("--source", default="/evroute/cli", show_default=True, help="Event source.")
@click.option("--subject", help="Event subject.")
@click.option("--id", "id_", default="evroute-routes-test", show_default=True, help="Event id.")
@click.option(
    "--ext", "exts", multiple=True, metavar="KEY=VALUE", help="An extension attribute (repeatable)."
)
@click.option("--broker", default="default", show_default=True, help="The broker the event is published to.")
@click.option("--json", "as_json", is_flag=True, help="Print [{route, matched, failed_filter}] as JSON.")
def test(
    event_file: str | None,
    type_: str | None,
    source: str,
    subject: str | None,
    id_: str,
    exts: tuple[str, ...],
    broker: str,
    as_json: bool,
) -> None:
    """Which routes an event would reach; for each route it would not, the filter part that failed.

    The event is a structured CloudEvent JSON file (`-` reads stdin; id, source and specversion
    may be left out), or is built from --type, --source, --subject and --ext. A matched route
    with a transform (JSONata, or a Knative EventTransform) shows the event as it would be
    delivered. Exits 0 whether or not anything matches.

    \b
      evroute routes test --type order.placed --source /shop --ext region=eu
      evroute routes test order.json --broker order-broker
    """
    from evroute.errors import InvalidInput
    from evroute.publish import check_broker
    from evroute.routes.load import load_routes

    check_broker(broker)
    if event_file is not None and type_ is not None:
        raise InvalidInput("give either EVENT-FILE or --type …, not both")
    if event_file is None and type_ is None:
        raise InvalidInput("give an EVENT-FILE (structured CloudEvent JSON) or --type TYPE [--source S …]")
    if event_file is not None:
        event = _event_from_file(event_file)
    else:
        event = _event_from_flags(type_ or "", source, subject, id_, exts)
    routeset = load_routes(ctx_obj().routes, resolve=False)
    results: list[dict[str, Any]] = []
    paused: dict[str, bool] = {}
    for route in routeset.routes:
        if route.broker != broker:
            continue
        why = route.matcher.explain_event(event)
        result: dict[str, Any] = {"route": route.name, "matched": why is None, "failed_filter": why}
        if why is None and route.transform is not None:
            result.update(_transformed(route.transform, event))
        results.append(result)
        paused[route.name] = route.paused
    if as_json:
        echo_json(results)
        return
    if not results:
        click.echo(f"no routes on broker '{broker}'")
        return
    rows = []
    for r in results:
        outcome = "matched" if r["matched"] else "not matched"
        if r["matched"] and paused[r["route"]]:
            outcome += " (paused: waits until resumed)"
        rows.append([r["route"], outcome, r["failed_filter"] or ""])
    echo_table(rows, ["route", "result", "failed filter"])
    for r in results:
        if "transformed" in r:
            click.echo(f"\nroute {r['route']}: the transformed event:")
            click.echo(json.dumps(r["transformed"], indent=2, ensure_ascii=False))
        elif "transform_failed" in r:
            click.echo(f"\nroute {r['route']}: {r['transform_failed']} (a delivery would fail permanently)")


def _transformed(transform: Any, event: Any) -> dict[str, Any]:
    """What a route's transform makes of ``event``, as ``routes test`` shows it."""
    from evroute.cloudevent import to_dict
    from evroute.transform import TransformFailed

    try:
        shaped = transform.apply(event)
    except TransformFailed as exc:
        return {"transform_failed": exc.reason}
    return {"transformed": to_dict(shaped)}


def _event_from_file(path: str) -> CloudEvent:
    from evroute.cloudevent import from_dict
    from evroute.errors import InvalidInput

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc}); expected one structured CloudEvent") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"{path}: expected one structured CloudEvent (a JSON object)")
    obj.setdefault("specversion", "1.0")
    obj.setdefault("id", "evroute-routes-test")
    obj.setdefault("source", "/evroute/cli")
    return from_dict(obj, f"{path}: ")


def _event_from_flags(
    type_: str, source: str, subject: str | None, id_: str, exts: tuple[str, ...]
) -> CloudEvent:
    from evroute.cloudevent import make_event
    from evroute.errors import InvalidInput

    extensions: dict[str, str | int | bool] = {}
    for item in exts:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--ext {item!r} must be KEY=VALUE")
        extensions[key] = value
    return make_event(type=type_, source=source, id=id_, subject=subject, extensions=extensions)
