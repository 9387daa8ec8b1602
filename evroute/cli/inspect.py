"""``evroute events``: the event log (``list``; more subcommands register in ``SUBCOMMANDS``).

``events`` is a click group. Subcommands written here are attached with ``@events.command``;
subcommands that live in another module are named in ``SUBCOMMANDS`` and imported only when
they run, like the top-level commands.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from evroute.cli.common import echo_json, echo_table, open_store

# subcommand name -> "module:attribute", loaded lazily (see evroute.cli.COMMANDS)
SUBCOMMANDS: dict[str, str] = {
    "show": "evroute.cli.trace:show",
}


class _EventsGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n, target in SUBCOMMANDS.items() if _exists(target)]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = SUBCOMMANDS.get(cmd_name)
        if target is None or not _exists(target):
            return None
        module_name, attr = target.split(":")
        loaded = getattr(importlib.import_module(module_name), attr)
        assert isinstance(loaded, click.Command)
        return loaded


def _exists(target: str) -> bool:
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=_EventsGroup)
def events() -> None:
    """The event log: list events, or show where one event is, route by route.

    \b
      evroute events list --type order.placed
      evroute events show order-1
    """


@events.command("list")
@click.option("--broker", metavar="NAME", help="Only this broker [default: every broker].")
@click.option("--type", "type_", metavar="TYPE", help="Only events of this type.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many of the newest events to show (oldest first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_cmd(broker: str | None, type_: str | None, limit: int, as_json: bool) -> None:
    """List the newest events of the log, oldest first: seq, broker, publish time, id, type,
    source and subject.

    \b
      evroute events list
      evroute events list --broker order-broker --type order.placed --limit 100
      evroute events list --json
    """
    from evroute.clock import rfc3339
    from evroute.cloudevent import to_dict
    from evroute.publish import check_broker

    if broker is not None:
        check_broker(broker)
    with open_store(create=False) as store:
        rows = store.events(broker=broker, type=type_, limit=limit)
    if as_json:
        echo_json(
            [
                {
                    "seq": r.seq,
                    "broker": r.broker,
                    "published_at": rfc3339(r.published_at),
                    "event": to_dict(r.event),
                }
                for r in rows
            ]
        )
        return
    echo_table(
        [
            [
                r.seq,
                r.broker,
                rfc3339(r.published_at),
                r.event.id,
                r.event.type,
                r.event.source,
                r.event.subject or "",
            ]
            for r in rows
        ],
        ["seq", "broker", "published", "id", "type", "source", "subject"],
    )
