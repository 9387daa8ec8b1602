"""``evroute worker``: deliver events to every route until stopped."""

from __future__ import annotations

import logging
import sys

import click

from evroute.cli.common import ctx_obj


@click.command()
@click.option("--once", is_flag=True, help="Deliver everything deliverable now (due retries too), then exit.")
@click.option(
    "--drain", is_flag=True, help="Keep going until every backlog is empty and no retry is scheduled."
)
@click.option(
    "--listen", metavar="HOST:PORT", help="Serve the CloudEvents HTTP ingress (binds 127.0.0.1 by default)."
)
@click.option(
    "--token", envvar="EVROUTE_TOKEN", help="Bearer token the ingress requires (env EVROUTE_TOKEN)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every delivery.")
@click.option("-q", "--quiet", is_flag=True, help="Log only failures.")
def worker(
    once: bool, drain: bool, listen: str | None, token: str | None, verbose: bool, quiet: bool
) -> None:
    """Run the delivery worker: every route gets every matching event.

    Reloads routes.yaml when it changes (or on SIGHUP); SIGINT/SIGTERM stop it after
    in-flight deliveries finish. Only one worker delivers from a database at a time; a
    second one stands by and takes over if the first dies.

    \b
      evroute worker
      EVROUTE_TOKEN=$(cat ~/.config/evroute/token) evroute worker --listen 127.0.0.1:8080
      evroute worker --drain
    """
    from evroute.errors import InvalidInput
    from evroute.worker.runner import WorkerOptions, run

    if once and drain:
        raise InvalidInput("--once and --drain cannot be combined (pick one)")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("evroute")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    obj = ctx_obj()
    code = run(
        WorkerOptions(
            store=obj.store,
            routes=obj.routes,
            once=once,
            drain=drain,
            listen=listen,
            token=token,
            credentials=obj.credentials,
        )
    )
    if code:
        sys.exit(code)
