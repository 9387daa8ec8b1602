"""The ``evroute`` command line: a thin layer over the library.

Commands are loaded lazily (only the one being run is imported), which keeps a single
``evroute publish`` close to the start-up cost of Python itself. Every error the library
raises reaches :func:`main`, which prints it once as ``Error: …`` with its exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from evroute.errors import EvrouteError
from evroute.store.opener import Credentials, StoreURL, choose, refuse_nats

# command name -> "module:attribute"; each module is imported only when its command runs.
COMMANDS: dict[str, str] = {
    "init": "evroute.cli.publish:init_cmd",
    "publish": "evroute.cli.publish:publish",
    "events": "evroute.cli.inspect:events",
    "status": "evroute.cli.status:status",
    "gc": "evroute.cli.status:gc",
    "routes": "evroute.cli.routes:routes",
    "subscribe": "evroute.cli.subscribe:subscribe",
    "worker": "evroute.cli.worker:worker",
    "dlq": "evroute.cli.dlq:dlq",
    "export": "evroute.cli.export:export",
    "ui": "evroute.cli.ui:ui",
    "tail": "evroute.cli.tail:tail",
}


class Context:
    """What every command needs: which store, and where the routes file is. (A plain class,
    not a dataclass: defining one costs about half a millisecond of every command's start.)"""

    __slots__ = ("credentials", "routes", "store")

    def __init__(self, store: StoreURL, routes: str, credentials: Credentials | None = None) -> None:
        self.store = store
        self.routes = routes
        self.credentials = credentials if credentials is not None else Credentials()

    @property
    def db(self) -> str:
        """The SQLite file (a NATS store is refused by commands that need the file itself)."""
        refuse_nats(self.store)
        return self.store.path


# click's own help option looks up its text's translation each time a command parses its
# arguments (gettext: the `locale` module and file look-ups on every start). evroute's is the
# same option (names, text, eager, prints the help and exits) with the text as it is.
HELP_TEXT = "Show this message and exit."


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


def _help_option(command: click.Command, ctx: click.Context) -> click.Option | None:
    names = command.get_help_option_names(ctx)
    if not names or not command.add_help_option:
        return None
    option: click.Option | None = command.__dict__.get("_evroute_help")
    if option is None:  # one object per command: click orders eager callbacks by identity
        option = click.Option(
            [*names, "_evroute_help"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            help=HELP_TEXT,
            callback=_show_help,
        )
        command.__dict__["_evroute_help"] = option
    return option


class Command(click.Command):
    """A click command whose help option needs no message catalogue."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _help_option(self, ctx)


class Group(click.Group):
    """A click group whose help option needs no message catalogue."""

    command_class = Command

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _help_option(self, ctx)


class LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, target in COMMANDS.items() if _module_exists(target.split(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None  # a command this build of evroute leaves out
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _print_version(ctx: click.Context, value: bool) -> None:
    """``--version`` as click's version_option prints it. (Not click.version_option itself: it
    looks up its message's translation when the CLI is imported, file look-ups on every start.)"""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    click.echo(f"{ctx.find_root().info_name}, version {version('evroute')}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store",
    metavar="URL",
    default=None,
    help="store: sqlite:PATH, sqlite:///ABS/PATH or nats://HOST:PORT[,HOST:PORT] (env EVROUTE_STORE).",
)
@click.option(
    "--db",
    "db",
    metavar="PATH",
    default=None,
    help="SQLite database file, same as --store sqlite:PATH (env EVROUTE_DB; default ./evroute.db).",
)
@click.option(
    "--routes",
    "routes",
    envvar="EVROUTE_ROUTES",
    default="routes.yaml",
    show_default=True,
    help="routes file (env EVROUTE_ROUTES).",
)
@click.option(
    "--nats-creds",
    "nats_creds",
    metavar="FILE",
    envvar="NATS_CREDS",
    help="NATS credentials file (env NATS_CREDS).",
)
@click.option(
    "--nats-token", "nats_token", metavar="TOKEN", envvar="NATS_TOKEN", help="NATS token (env NATS_TOKEN)."
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _print_version(ctx, value),
    help="Show the version and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    store: str | None,
    db: str | None,
    routes: str,
    nats_creds: str | None,
    nats_token: str | None,
) -> None:
    """evroute: publish CloudEvents to a local broker and fan them out to every matching route.

    \b
      evroute init
      evroute publish --type order.placed --data '{"order": 1}'
      evroute worker
    """
    ctx.obj = Context(
        store=choose(store, db, os.environ),
        routes=routes,
        credentials=Credentials(creds=nats_creds or None, token=nats_token or None),
    )


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the console script: one error path for every command."""
    try:
        rc = cli.main(args=argv, prog_name="evroute", standalone_mode=False)
        # standalone_mode=False hands back ctx.exit(code) as the return value.
        sys.exit(rc if isinstance(rc, int) else 0)
    except EvrouteError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        # One line like every other error (click's own banner makes it four); the hint says where help is.
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # stdout closed early (`evroute events list | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
