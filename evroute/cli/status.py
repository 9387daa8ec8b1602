"""``evroute status`` (the worker and every route at a glance) and ``evroute gc`` (retention now)."""

from __future__ import annotations

import time
from typing import Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, open_store


def ago(seconds: float) -> str:
    """A short human span: ``4s``, ``3m``, ``2h``, ``5d``."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _worker_line(store: Any, now: float) -> str:
    from evroute.store import lease

    held = lease.current(store)
    if held is None:
        return "worker: not running"
    if not held.alive(now):
        return (
            f"worker: not running (last worker: pid {held.pid} on {held.host}, "
            f"heartbeat {ago(now - held.heartbeat)} ago)"
        )
    from evroute.clock import rfc3339

    since = rfc3339(held.since)
    return f"worker: running, pid {held.pid} on {held.host} since {since} (heartbeat {ago(now - held.heartbeat)} ago)"


def _retrying_cell(count: int, due: str | None, now: float) -> str:
    from evroute.clock import parse_time

    if not count:
        return "0"
    moment = parse_time(due) if due else None
    if moment is None:
        return str(count)
    return f"{count} (due now)" if moment <= now else f"{count} (next in {ago(moment - now)})"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Show the worker's state and, per route: broker, subscriber, cursor, lag, in flight,
    scheduled retries, delayed events, dead letters, delivered/failed counts, breaker (and
    whether its rate limit holds it back) and last error; then each endpoint of a consumer group.

    Cursors of routes no longer in the routes file are listed as "removed (cursor kept)".

    \b
      evroute status
      evroute status --json | jq '.routes[] | {name, lag}'
    """
    from evroute.inspect import load_lenient, route_status

    loaded = load_lenient(ctx_obj().routes)
    now = time.time()
    with open_store(create=False) as store:
        doc = route_status(store, loaded.routeset, now)
        line = _worker_line(store, now)
    if loaded.problem:
        click.echo(
            f"warning: {loaded.problem.splitlines()[0]}; showing the database's cursors only", err=True
        )
    if as_json:
        echo_json(doc)
        return
    click.echo(line)
    gone = "(not in routes file)" if loaded.problem else "removed (cursor kept)"
    rows = []
    for r in doc["routes"]:
        rows.append(
            [
                r["name"],
                r["broker"],
                r["subscriber"] if r["subscriber"] is not None else gone,
                "(not started)" if r["cursor"] is None else r["cursor"],
                "" if r["lag"] is None else r["lag"],
                r["in_flight"],
                _retrying_cell(r["retrying"], r["next_retry_due"], now),
                r["scheduled"],
                r["dead_letters"],
                r["delivered"],
                r["failed"],
                r["breaker"] + (", throttled" if r["throttled"] else ""),
                {True: "yes", False: "no", None: ""}[r["paused"]],
                _short(r["last_error"]),
            ]
        )
    echo_table(
        rows,
        headers=[
            "route",
            "broker",
            "subscriber",
            "cursor",
            "lag",
            "in flight",
            "retrying",
            "scheduled",
            "dead letters",
            "delivered",
            "failed",
            "breaker",
            "paused",
            "last error",
        ],
    )
    for r in doc["routes"]:
        for e in r["endpoints"] or []:
            health = "healthy" if e["healthy"] else "cooling down"
            click.echo(
                f"  {r['name']} -> {e['uri']}: {health}, in flight {e['in_flight']}, "
                f"delivered {e['delivered']}, failed {e['failed']}"
            )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def gc(as_json: bool) -> None:
    """Delete, now, the events that settings.retention allows: older than the retention and
    passed by every route of the routes file, and needed by no scheduled retry. (The worker
    does the same every minute.) Dead letters keep their own copy of their event.

    \b
      evroute gc
    """
    from evroute.durations import format_duration
    from evroute.retention import collect
    from evroute.routes.load import load_routes

    routeset = load_routes(ctx_obj().routes)
    retention = routeset.settings.retention
    with open_store(create=False) as store:
        deleted = collect(store, routeset, time.time(), limit=None)
    if as_json:
        echo_json(
            {"deleted": deleted, "retention": None if retention is None else format_duration(retention)}
        )
    elif retention is None:
        click.echo(
            "settings.retention is not set in the routes file: events are kept for ever; nothing deleted"
        )
    else:
        click.echo(
            f"deleted {deleted} event{'' if deleted == 1 else 's'} "
            f"older than {format_duration(retention)} that every route has passed"
        )
