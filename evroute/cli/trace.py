"""``evroute events show ID|SEQ``: where one event is, route by route."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, open_store


def _detail(entry: dict[str, Any], now: float) -> str:
    from evroute.cli.status import ago
    from evroute.clock import parse_time

    state = entry["state"]
    if state == "retrying":
        parts = [f"{entry['attempt']} attempt{'' if entry['attempt'] == 1 else 's'} made"]
        due = parse_time(entry["next_due"]) if entry["next_due"] else None
        if due is not None:
            parts.append("next due now" if due <= now else f"next in {ago(due - now)} ({entry['next_due']})")
        if entry["dlq_id"] is not None:
            parts.append(f"replay of dead letter {entry['dlq_id']}")
        if entry["last_error"]:
            parts.append(f"last error: {entry['last_error']}")
        return "; ".join(parts)
    if state == "dead":
        text = f"dead letter {entry['dlq_id']} after {entry['attempt']} attempt{'' if entry['attempt'] == 1 else 's'}"
        return text + (f": {entry['last_error']}" if entry["last_error"] else "")
    if state == "filtered":
        return f"filter did not match: {entry['failed_filter']}"
    if state == "paused":
        return "route is paused; delivered once resumed"
    if state == "pending":
        return "not yet dispatched"
    if state == "scheduled":
        due = parse_time(entry["due"]) if entry["due"] else None
        when = "" if due is None else ("due now" if due <= now else f"in {ago(due - now)}")
        return f"scheduled for {entry['due']}" + (f" ({when})" if when else "")
    return ""


@click.command("show")
@click.argument("key", metavar="ID|SEQ")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(key: str, as_json: bool) -> None:
    """Show one event and, for every route of its broker, whether it was delivered, is
    pending, is retrying (attempts, next due), was dead-lettered, or was filtered out (and
    which filter part failed).

    A number is taken as a seq (or, if no event has that seq, as an id). An id found in
    several brokers or sources shows the newest.

    \b
      evroute events show order-1
      evroute events show 42 --json
    """
    from evroute.inspect import find_event, routes_of, trace

    with open_store(create=False) as store:
        loaded = routes_of(store, ctx_obj().routes)
        found = find_event(store, key)
        doc = trace(store, loaded.routeset, found)
    if loaded.problem:
        click.echo(f"warning: {loaded.problem.splitlines()[0]}; route states not shown", err=True)
    if as_json:
        echo_json(doc)
        return
    event = doc["event"]
    where = f"seq {doc['seq']}" if doc["seq"] is not None else "no seq"
    published = doc["published_at"] or "(no longer in the log; from a dead letter's copy)"
    click.echo(f"event {event['id']} ({where}, broker {doc['broker']}, published {published})")
    if found.others:
        listed = ", ".join(
            f"seq {seq} (broker {broker}, source {source})"
            if seq is not None
            else f"broker {broker}, source {source}"
            for seq, broker, source in found.others
        )
        click.echo(
            f"note: {len(found.others) + 1} events have id {event['id']!r}; showing the newest. "
            f"Others: {listed} (show one with `evroute events show SEQ`)"
        )
    for line in json.dumps(event, indent=2, ensure_ascii=False).splitlines():
        click.echo(f"  {line}")
    now = time.time()
    if not doc["routes"]:
        click.echo(f"no route of broker {doc['broker']} in the routes file")
        return
    echo_table(
        [[r["route"], r["state"], _detail(r, now)] for r in doc["routes"]],
        ["route", "state", "detail"],
    )
    for r in doc["routes"]:
        if r["attempts"]:
            click.echo(f"attempts of route {r['route']}:")
            for a in r["attempts"]:
                status = "-" if a["status"] is None else str(a["status"])
                error = f"  {a['error']}" if a["error"] else ""
                click.echo(f"  #{a['attempt']:<3} {a['at']}  {status:>4}  {a['duration_ms']:>8.1f} ms{error}")
