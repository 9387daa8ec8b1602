"""``evroute status`` (the worker and every route at a glance) and ``evroute gc`` (retention now)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, is_terminal, open_store

CHUNK_FOR_BAR = 1000  # fewer events than one deletion chunk: done before a bar would show


def ago(seconds: float) -> str:
    """A short human span: ``4s``, ``3m``, ``2h``, ``5d``."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _worker_line(store: Any, now: float) -> str:
    known = store.workers(now)
    live = [w for w in known if w.alive]
    if len(live) > 1:
        return f"workers: {len(live)} running (" + ", ".join(f"pid {w.pid} on {w.host}" for w in live) + ")"
    if not known:
        return "worker: not running"
    held = known[0]
    if not held.alive:
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
@click.option(
    "--watch",
    type=click.FloatRange(min=0.2),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Redraw every SECONDS (default 2) with delivery rates; Ctrl-C stops.",
)
def status(as_json: bool, watch: float | None) -> None:
    """Show the worker's state and, per route: broker, subscriber, cursor, lag, in flight,
    scheduled retries, delayed events, dead letters, delivered/failed counts, breaker (and
    whether its rate limit holds it back) and last error; then each endpoint of a consumer group.

    Cursors of routes no longer in the routes file are listed as "removed (cursor kept)".

    \b
      evroute status
      evroute status --watch
      evroute status --json | jq '.routes[] | {name, lag}'
    """
    if watch is None:
        _status_once(as_json, None)
        return
    _watch(as_json, watch)


def _watch(as_json: bool, every: float) -> None:
    terminal = sys.stdout.isatty() and not as_json
    before: dict[str, tuple[float, int]] = {}
    if terminal:
        sys.stdout.write("\x1b[?25l")  # hide the cursor while redrawing; shown again below
    try:
        while True:
            if terminal:
                sys.stdout.write("\x1b[H\x1b[2J")
            before = _status_once(as_json, before)
            if terminal:
                click.echo(f"every {every:g}s · Ctrl-C to stop")
            elif not as_json:
                click.echo("")
            time.sleep(every)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how watching ends: exit 0, no "Aborted!", no traceback
    finally:
        if terminal:
            sys.stdout.write("\x1b[?25h")
            sys.stdout.flush()


def _status_once(as_json: bool, before: dict[str, tuple[float, int]] | None) -> dict[str, tuple[float, int]]:
    """Print the status once; with ``before`` (watching) add deliveries/s since the last draw."""
    from evroute.inspect import route_status, routes_of

    now = time.time()
    with open_store(create=False) as store:
        loaded = routes_of(store, ctx_obj().routes)
        doc = route_status(store, loaded.routeset, now)
        line = _worker_line(store, now)
    seen = {r["name"]: (now, int(r["delivered"])) for r in doc["routes"]}
    rates: dict[str, float | None] = {}
    for name, (at, count) in seen.items():
        prev = (before or {}).get(name)
        rates[name] = None if prev is None or at <= prev[0] else max(0.0, (count - prev[1]) / (at - prev[0]))
    if loaded.problem:
        click.echo(
            f"warning: {loaded.problem.splitlines()[0]}; showing the database's cursors only", err=True
        )
    if as_json:
        if before is not None:
            for r in doc["routes"]:
                r["rate"] = rates[r["name"]]
            click.echo(json.dumps(doc, ensure_ascii=False, default=str))
        else:
            echo_json(doc)
        return seen
    click.echo(line)
    gone = "(not in routes file)" if loaded.problem else "removed (cursor kept)"
    rows = []
    for r in doc["routes"]:
        row = [
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
        if before is not None:
            rate = rates[r["name"]]
            row.insert(10, "" if rate is None else f"{rate:.1f}")
        rows.append(row)
    headers = [
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
    ]
    if before is not None:
        headers.insert(10, "delivered/s")
    echo_table(rows, headers=headers)
    for r in doc["routes"]:
        for e in r["endpoints"] or []:
            health = "healthy" if e["healthy"] else "cooling down"
            click.echo(
                f"  {r['name']} -> {e['uri']}: {health}, in flight {e['in_flight']}, "
                f"delivered {e['delivered']}, failed {e['failed']}"
            )
    return seen


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

    routeset = load_routes(ctx_obj().routes, resolve=False)
    retention = routeset.settings.retention
    now = time.time()
    with open_store(create=False) as store:
        total = 0
        if retention is not None and is_terminal() and not as_json:
            from evroute.store import browse

            if store.kind == "sqlite":  # the bar's size: a count only a SQLite file gives cheaply
                total = browse.count_older(store.db, now - retention)
        if total > CHUNK_FOR_BAR:
            # A progress bar on a terminal only (never on a pipe), sized by what may go.
            with click.progressbar(length=total, label="deleting", file=sys.stderr) as bar:
                deleted = collect(store, routeset, now, limit=None, progress=bar.update)
        else:
            deleted = collect(store, routeset, now, limit=None)
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
