"""``evroute tail``: follow delivery outcomes as they happen."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from evroute.cli.common import ctx_obj, open_store

COLOURS = {"delivered": "green", "retrying": "yellow", "dead": "red"}


def line(d: dict[str, Any], colour: bool) -> str:
    """``time route event-id type → status latency``"""
    clock = (d["at"] or "")[11:23] or "-"
    status = "-" if d["status"] is None else str(d["status"])
    latency = "" if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"
    attempt = f" (attempt {d['attempt']})" if d["attempt"] and d["attempt"] > 1 else ""
    result = f"{d['outcome']} {status}"
    if colour:
        result = click.style(result, fg=COLOURS.get(d["outcome"]), bold=d["outcome"] == "dead")
    return f"{clock} {d['route']} {d['id'] or d['seq']} {d['type'] or '-'} → {result} {latency}{attempt}".rstrip()


@click.command()
@click.option("--route", metavar="R", help="Only this route's outcomes.")
@click.option("--broker", metavar="B", help="Only events of this broker.")
@click.option("--type", "type_", metavar="T", help="Only events of this type.")
@click.option("--failed", is_flag=True, help="Only failures (retries scheduled and dead letters).")
@click.option("--last", type=click.IntRange(min=0), default=0, help="Start with the N newest outcomes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per outcome.")
def tail(
    route: str | None, broker: str | None, type_: str | None, failed: bool, last: int, as_json: bool
) -> None:
    """Follow deliveries as they happen, one line each: time, route, event id, type, outcome,
    status and latency (coloured on a terminal). Ctrl-C stops.

    \b
      evroute tail
      evroute tail --route payment --failed
      evroute tail --json | jq 'select(.status >= 500)'
    """
    from evroute.follow import Filters, doc, follow
    from evroute.inspect import routes_of

    obj = ctx_obj()
    colour = sys.stdout.isatty() and not as_json

    def missed(k: int) -> None:
        click.echo(
            f"warning: {k} outcome{'' if k == 1 else 's'} left the ring before they were read", err=True
        )

    try:
        with open_store(create=False) as store:
            routeset = routes_of(store, obj.routes).routeset
            for o in follow(store, Filters(route, broker, type_, failed), last=last, missed=missed):
                d = doc(o, routeset)
                click.echo(json.dumps(d, ensure_ascii=False) if as_json else line(d, colour))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends: exit 0, no traceback
