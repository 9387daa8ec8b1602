"""``evroute init`` and ``evroute publish``.

Kept light on purpose: a single publish imports click, this module and the store, and
nothing else (no YAML parser when the routes file is unchanged, no tabulate, no aiohttp).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any

import click

from evroute.cli import Command
from evroute.cli.common import ctx_obj

_EVENT_OPTIONS = ("--type", "--source", "--id", "--subject", "--time", "--data", "--datacontenttype")


@click.command("init", cls=Command)
def init_cmd() -> None:
    """Write a commented routes.yaml example (the order fan-out: inventory and payment both
    receive `order.placed`) and create the database. An existing routes file is left as is.

    \b
      evroute init
      evroute --routes shop/routes.yaml --db shop/evroute.db init
    """
    from evroute.store import Store

    obj = ctx_obj()
    db = obj.db  # a store that is no SQLite file is refused before anything is written
    if os.path.exists(obj.routes):
        click.echo(f"{obj.routes} exists, left as is")
    else:
        from importlib.resources import files

        text = files("evroute").joinpath("templates/routes.yaml").read_text(encoding="utf-8")
        try:
            # "x": never overwrite, even a file created since the check above.
            with open(obj.routes, "x", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            click.echo(f"{obj.routes} exists, left as is")
        except OSError as exc:
            from evroute.errors import RuntimeFault

            raise RuntimeFault(f"cannot write {obj.routes}: {exc.strerror} (check --routes)") from None
        else:
            click.echo(f"wrote {obj.routes}: routes inventory and payment on order.placed (edit it)")
    existed = os.path.exists(db)
    Store(db).close()
    click.echo(f"database {db} {'ready' if existed else 'created'}")


@click.command(cls=Command)
@click.option(
    "--type", "type_", metavar="TYPE", help="Event type, e.g. order.placed (required without --file)."
)
@click.option("--source", metavar="URI-REF", help="Event source [default: /evroute/cli].")
@click.option("--id", "id_", metavar="ID", help="Event id [default: a new UUID].")
@click.option("--subject", metavar="TEXT", help="Event subject.")
@click.option("--time", "time_", metavar="RFC3339", help="Event time [default: now].")
@click.option(
    "--data",
    metavar="JSON|@FILE|-",
    help="Event data: JSON text, @FILE for a file's bytes, - for standard input.",
)
@click.option(
    "--datacontenttype",
    metavar="MEDIA-TYPE",
    help="Media type of --data [default: application/json when there is data]; "
    "any non-JSON type sends the data as it is.",
)
@click.option("--dataschema", metavar="URI", help="Event dataschema.")
@click.option("--ext", "exts", multiple=True, metavar="KEY=VALUE", help="Extension attribute (repeatable).")
@click.option(
    "--file",
    "file_",
    metavar="FILE|-",
    help="Publish every event of a file (JSON lines or one JSON array of structured CloudEvents); "
    "all or nothing.",
)
@click.option("--broker", metavar="NAME", help="Broker to publish to [default: default].")
@click.option(
    "--delay",
    metavar="DURATION",
    help="Hold the event this long before any route delivers it (e.g. 10m, PT30S).",
)
@click.option(
    "--at", "at", metavar="RFC3339", help="Hold the event until this time before any route delivers it."
)
@click.option(
    "--topic",
    metavar="TOPIC",
    help="Publish as Dapr does to this topic: the topic and pubsubname (the broker) attributes "
    "are set, and the type defaults to com.dapr.event.sent.",
)
@click.option("--url", metavar="URL", help="Send to a running ingress (`evroute worker --listen`) instead.")
@click.option(
    "--token", envvar="EVROUTE_TOKEN", metavar="TOKEN", help="Ingress token for --url (env EVROUTE_TOKEN)."
)
def publish(
    type_: str | None,
    source: str | None,
    id_: str | None,
    subject: str | None,
    time_: str | None,
    data: str | None,
    datacontenttype: str | None,
    dataschema: str | None,
    exts: tuple[str, ...],
    file_: str | None,
    broker: str | None,
    delay: str | None,
    at: str | None,
    topic: str | None,
    url: str | None,
    token: str | None,
) -> None:
    """Publish one CloudEvent, or every event of a file, to a broker.

    Prints `stored ID seq N`, or says the event was a duplicate: an event whose
    (broker, source, id) is already stored is not stored again.

    \b
      evroute publish --type order.placed --source /shop --data '{"order": 1}'
      evroute publish --type note --data @note.txt --datacontenttype text/plain
      evroute publish --type order.placed --ext tenant=acme --broker order-broker
      evroute publish --type reminder.due --delay 24h --data '{"order": 1}'
      evroute publish --file orders.jsonl
      evroute publish --url http://127.0.0.1:8080/ --type order.placed
      evroute publish --broker pubsub --topic orders --data '{"amount": 120}'
    """
    from evroute import publish as lib
    from evroute.errors import InvalidInput

    obj = ctx_obj()
    if url is not None and broker is not None:
        raise InvalidInput(
            "--broker does not apply with --url: the URL's path names the broker (http://HOST:PORT/BROKER)"
        )
    broker_name = lib.check_broker(broker if broker is not None else lib.DEFAULT_BROKER)
    if file_ is not None:
        given = [
            flag
            for flag, value in zip(
                _EVENT_OPTIONS, (type_, source, id_, subject, time_, data, datacontenttype), strict=True
            )
            if value is not None
        ]
        if dataschema is not None:
            given.append("--dataschema")
        if exts:
            given.append("--ext")
        if delay is not None or at is not None:
            given.append("--delay/--at (set evroutedeliverat on each event of the file)")
        if topic is not None:
            given.append("--topic")
        if given:
            raise InvalidInput(
                f"--file takes every attribute from the file: {', '.join(given)} cannot be combined with it"
            )
        _publish_file(obj, broker_name, file_, url, token)
        return
    extensions = lib.parse_extensions(exts)
    if delay is not None or at is not None:
        import time

        from evroute.delay import DELIVER_AT, stamp

        if DELIVER_AT in extensions:
            raise InvalidInput(f"--ext {DELIVER_AT} and --delay/--at say the same thing: give one")
        extensions[DELIVER_AT] = stamp(delay, at, time.time()) or ""
    if topic is not None:
        from evroute.dapr_api import DAPR_TYPE, topic_attributes

        if not topic:
            raise InvalidInput("--topic must not be empty")
        if url is None:
            pubsub = broker_name
        else:  # the URL's path names the broker: http://HOST:PORT/BROKER, or / for default
            from urllib.parse import urlsplit

            pubsub = urlsplit(url).path.strip("/") or lib.DEFAULT_BROKER
        extensions.update(topic_attributes(topic, pubsub))
        type_ = DAPR_TYPE if type_ is None else type_
    fields: dict[str, Any] = {
        "type": type_,
        "source": source,
        "id": id_,
        "subject": subject,
        "data": None if data is None else lib.read_data(data, _stdin()),
        "datacontenttype": datacontenttype,
        "dataschema": dataschema,
        "time": time_,
        "extensions": extensions,
    }
    quick = None if url is not None else lib.quick_attributes(**fields)
    attrs: Mapping[str, Any]
    if quick is not None:
        attrs = quick
    else:  # every other case, and the wording of every refusal
        event = lib.event_from_options(**fields)
        if url is not None:
            from evroute.client import send

            stored, _ = send(url, [event], token=token)
            if stored:
                click.echo(f"stored {event.id} at {url}")
            else:
                click.echo(
                    f"duplicate {event.id} (source {event.source}): already stored at {url}, nothing written"
                )
            return
        attrs = event.attributes
    result = lib.publish_attributes(
        obj.store, obj.routes, broker_name, attrs, fields["data"], obj.credentials
    )
    event_id, held = attrs["id"], attrs.get("evroutedeliverat")
    if result.seq is not None:
        click.echo(f"stored {event_id} seq {result.seq}" + (f", scheduled for {held}" if held else ""))
    else:
        click.echo(
            f"duplicate {event_id} (source {attrs['source']}, broker {broker_name}): already stored, nothing written"
        )
    _warn(result.warning, "event")


def _publish_file(obj: Any, broker: str, path: str, url: str | None, token: str | None) -> None:
    from evroute import publish as lib
    from evroute.errors import InvalidInput

    name = "<stdin>" if path == "-" else path
    try:
        stream = _stdin() if path == "-" else open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InvalidInput(f"--file {path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        if url is not None:
            from evroute.client import send
            from evroute.eventfile import read_file_events

            stored, duplicates = send(url, read_file_events(stream, name), token=token)
            click.echo(f"stored {stored}, duplicates {duplicates}")
            return
        size = _regular_size(stream) if sys.stderr.isatty() else None
        if size is None:
            result = lib.publish_file(
                obj.store, obj.routes, broker, stream, name, credentials=obj.credentials
            )
        else:
            with click.progressbar(length=size, label="publishing", file=sys.stderr) as bar:
                seen = [0]

                def progress(done: int) -> None:
                    bar.update(done - seen[0])
                    seen[0] = done

                result = lib.publish_file(
                    obj.store, obj.routes, broker, stream, name, progress, credentials=obj.credentials
                )
    finally:
        if path != "-":
            stream.close()
    click.echo(f"stored {result.stored}, duplicates {result.duplicates}")
    _warn(result.warning, "events")


def _regular_size(stream: IO[bytes]) -> int | None:
    import stat

    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 1_000_000 else None


def _stdin() -> IO[bytes]:
    return sys.stdin.buffer


def _warn(warning: str | None, what: str) -> None:
    if warning:
        click.echo(f"Warning: {warning}; {what} stored anyway", err=True)
