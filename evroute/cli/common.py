"""What several commands share: opening the store and routes, rendering tables and JSON."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from evroute.cli import Context


def ctx_obj() -> Context:
    obj = click.get_current_context().find_object(Context)
    assert obj is not None
    return obj


def open_store(create: bool = True) -> Any:
    """The store that --store / --db / the environment name (an EventStore, see store/base.py)."""
    from evroute.store.opener import open_store as opener

    obj = ctx_obj()
    return opener(obj.store, create=create, credentials=obj.credentials)


def open_sqlite(create: bool = True) -> Any:
    """The SQLite file itself, for what only it keeps (the outcome ring ``tail`` follows);
    a NATS store is refused with one line."""
    from evroute.store import Store

    return Store(ctx_obj().db, create=create)


def echo_json(value: Any) -> None:
    import json  # not on a single publish's path

    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate

    if not rows:
        click.echo("(none)")
        return
    click.echo(tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True))


def is_terminal() -> bool:
    return sys.stderr.isatty()
