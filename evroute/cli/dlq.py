"""``evroute dlq``: list, show, replay and purge dead letters."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from evroute.cli.common import ctx_obj, echo_json, echo_table, is_terminal, open_store
from evroute.errors import InvalidInput

REPLAY_CHUNK = 500  # dead letters replayed per write transaction: the worker never waits long


def letter_doc(letter: Any, broker: bool = False) -> dict[str, Any]:
    """One dead letter in the ``dlq list --json`` shape (``broker`` added for ``dlq show``)."""
    from evroute.clock import rfc3339
    from evroute.cloudevent import to_dict

    doc: dict[str, Any] = {
        "id": letter.id,
        "route": letter.route,
        "seq": letter.seq,
        "event": to_dict(letter.event),
        "attempts": letter.attempts,
        "status": letter.status,
        "reason": letter.reason,
        "error": letter.error,
        "body": None if letter.body is None else bytes(letter.body).decode("utf-8", "replace"),
        "first_failed_at": rfc3339(letter.first_failed_at),
        "dead_at": rfc3339(letter.dead_at),
        "replayed_at": rfc3339(letter.replayed_at),
        "dls_outcome": letter.dls_outcome,
    }
    if broker:
        doc["broker"] = letter.broker
    return doc


@click.group()
def dlq() -> None:
    """Dead letters: events a route gave up on, with why.

    \b
      evroute dlq list --route payment
      evroute dlq show 3
      evroute dlq replay --route payment
      evroute dlq purge --before 2026-01-01T00:00:00Z --yes
    """


@dlq.command("list")
@click.option("--route", "route", metavar="R", help="Only this route's dead letters.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_cmd(route: str | None, limit: int | None, as_json: bool) -> None:
    """List dead letters, oldest first: id, route, event id, type, attempts, final status,
    reason, when, and whether it was replayed.

    \b
      evroute dlq list --route payment --limit 20
    """
    from evroute.clock import rfc3339

    with open_store(create=False) as store:
        letters = store.dead_letters(route=route, limit=limit)
    if as_json:
        echo_json([letter_doc(d) for d in letters])
        return
    rows = [
        [
            d.id,
            d.route,
            d.event.id,
            d.event.type,
            d.attempts,
            "" if d.status is None else d.status,
            d.reason,
            rfc3339(d.dead_at),
            rfc3339(d.replayed_at) or "",
        ]
        for d in letters
    ]
    echo_table(
        rows, ["id", "route", "event id", "type", "attempts", "status", "reason", "dead at", "replayed"]
    )


@dlq.command("show")
@click.argument("dlq_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(dlq_id: int, as_json: bool) -> None:
    """Show everything stored about one dead letter: the event, attempts, final status,
    error, the first 1 KiB of the response body, the times and the dead-letter-sink outcome.

    \b
      evroute dlq show 3
    """
    import json

    with open_store(create=False) as store:
        letter = store.dead_letter(dlq_id)
    doc = letter_doc(letter, broker=True)
    if as_json:
        echo_json(doc)
        return
    labels = [
        ("id", "id"),
        ("route", "route"),
        ("broker", "broker"),
        ("seq", "seq"),
        ("attempts", "attempts"),
        ("status", "status"),
        ("reason", "reason"),
        ("error", "error"),
        ("first failed at", "first_failed_at"),
        ("dead at", "dead_at"),
        ("replayed at", "replayed_at"),
        ("dead-letter sink", "dls_outcome"),
    ]
    width = max(len(label) for label, _ in labels) + 1
    for label, key in labels:
        value = doc[key]
        click.echo(f"{label + ':':<{width}} {'-' if value is None else value}")
    body = doc["body"]
    click.echo(f"{'body:':<{width}} {'-' if body is None else ''}")
    if body is not None:
        for line in body.splitlines() or [""]:
            click.echo(f"  {line}")
    click.echo("event:")
    for line in json.dumps(doc["event"], indent=2, ensure_ascii=False).splitlines():
        click.echo(f"  {line}")


def _select(store: Any, ids: tuple[int, ...], route: str | None, everything: bool) -> list[Any]:
    if ids:
        if everything:
            raise InvalidInput("give dead letter IDs or --all, not both")
        letters = [store.dead_letter(i) for i in dict.fromkeys(ids)]
        if route is not None:
            stray = [d for d in letters if d.route != route]
            if stray:
                raise InvalidInput(
                    f"dead letter {stray[0].id} belongs to route '{stray[0].route}', not '{route}' "
                    "(drop --route or that ID)"
                )
        return letters
    if not everything and route is None:
        raise InvalidInput(
            "nothing selected: give dead letter IDs, --route R (that route's) or --all; see `evroute dlq list`"
        )
    # --route R alone means every dead letter of R, as `dlq replay --route R` reads.
    return list(store.dead_letters(route=route))


@dlq.command("replay")
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@click.option(
    "--route", "route", metavar="R", help="Every dead letter of this route (or, with IDs, check them)."
)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --route, if given).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
def replay(ids: tuple[int, ...], route: str | None, everything: bool, dry_run: bool) -> None:
    """Send dead letters back through their route's normal delivery path, with a fresh
    attempt count. A replayed dead letter is marked replayed, and removed once delivered.
    The worker delivers them (now, if it is running; else when it starts).

    \b
      evroute dlq replay 3 4
      evroute dlq replay --route payment
      evroute dlq replay --all --dry-run
    """
    from evroute.inspect import RUNNING, load_lenient, worker_state

    loaded = load_lenient(ctx_obj().routes)
    with open_store(create=False) as store:
        letters = _select(store, ids, route, everything)
        if loaded.problem is None:
            # The worker only delivers replays of routes it runs: refuse (named IDs) or skip
            # (--all) dead letters whose route is no longer in the routes file.
            known = set(loaded.routeset.by_name())
            orphans = [d for d in letters if d.route not in known]
            if orphans and ids:
                raise InvalidInput(
                    f"dead letter {orphans[0].id} belongs to route '{orphans[0].route}', which is not in "
                    f"{ctx_obj().routes} (add the route back first)"
                )
            if orphans:
                names = ", ".join(sorted({d.route for d in orphans}))
                click.echo(
                    f"skipping {len(orphans)} dead letter{'s' if len(orphans) != 1 else ''} of routes not in "
                    f"the routes file: {names}",
                    err=True,
                )
                letters = [d for d in letters if d.route in known]
        else:
            click.echo(
                f"warning: {loaded.problem.splitlines()[0]}; not checking that the routes still exist",
                err=True,
            )
        if dry_run:
            echo_table(
                [[d.id, d.route, d.event.id, d.event.type, d.reason] for d in letters],
                ["id", "route", "event id", "type", "reason"],
            )
            click.echo(f"would replay {len(letters)} dead letter{'' if len(letters) == 1 else 's'} (dry run)")
            return
        chosen = [d.id for d in letters]
        chunks = [chosen[i : i + REPLAY_CHUNK] for i in range(0, len(chosen), REPLAY_CHUNK)]
        now = time.time()
        count = 0
        if is_terminal() and len(chunks) > 1:
            bar: Any = click.progressbar(length=len(chosen), label="replaying", file=sys.stderr)
            with bar:
                for part in chunks:
                    count += store.replay(part, now=now)
                    bar.update(len(part))
        else:
            for part in chunks:
                count += store.replay(part, now=now)
        running = worker_state(store, time.time())["state"] == RUNNING
    click.echo(
        f"replayed {count} dead letter{'' if count == 1 else 's'}; "
        f"the worker delivers {'it' if count == 1 else 'them'} (running: {'yes' if running else 'no'})"
    )


@dlq.command("purge")
@click.option("--route", "route", metavar="R", help="Only this route's dead letters.")
@click.option(
    "--before", metavar="TIME", help="Only those dead-lettered before TIME (RFC 3339, or an age like 7d)."
)
@click.option("--yes", is_flag=True, help="Confirm: the dead letters are deleted for good.")
def purge(route: str | None, before: str | None, yes: bool) -> None:
    """Delete dead letters for good (all of them, or of --route, or older than --before).

    \b
      evroute dlq purge --route payment --yes
      evroute dlq purge --before 2026-01-01T00:00:00Z --yes
      evroute dlq purge --before 30d --yes
    """
    moment = _before(before) if before is not None else None
    if not yes:
        raise InvalidInput("dlq purge deletes dead letters for good: add --yes to confirm")
    with open_store(create=False) as store:
        count = store.purge(route=route, before=moment)
    click.echo(f"purged {count} dead letter{'' if count == 1 else 's'}")


def _before(text: str) -> float:
    from evroute.clock import parse_time
    from evroute.durations import parse_duration
    from evroute.errors import InvalidDuration

    moment = parse_time(text)
    if moment is not None:
        return moment
    try:
        return time.time() - parse_duration(text)
    except InvalidDuration:
        raise InvalidInput(
            f"bad --before {text!r} (allowed: an RFC 3339 time like 2026-01-02T15:04:05Z, or an age like 30d or P7D)"
        )
