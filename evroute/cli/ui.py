"""``evroute ui``: the web console."""

from __future__ import annotations

import sys

import click

from evroute.cli.common import ctx_obj


@click.command()
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default="127.0.0.1:8090",
    show_default=True,
    help="Where to serve the console.",
)
@click.option(
    "--token",
    envvar="EVROUTE_TOKEN",
    help="Token that signs a browser in (env EVROUTE_TOKEN); a random one is printed when unset.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the console in a browser.")
def ui(listen: str, token: str | None, open_browser: bool) -> None:
    """Serve the web console over the database: overview, live events, one event's attempts,
    dead letters (replay, purge), routes (pause, resume, reset, test) and a send form.
    Delivers nothing itself; `evroute worker --listen` serves the same pages at /ui/.

    \b
      evroute ui
      evroute ui --listen 127.0.0.1:8090 --open
    """
    from evroute.console.server import run

    obj = ctx_obj()
    where = obj.store.path if obj.store.kind == "sqlite" else obj.store
    code = run(where, obj.routes, listen, token, open_browser, obj.credentials)
    if code:
        sys.exit(code)
