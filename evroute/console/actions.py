"""What the console changes, through the same library calls as the CLI. Each action takes the
request's JSON object and returns a JSON-able answer; bad input raises InvalidInput (400)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from evroute.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from evroute.console.app import Console

REPLAYED_FROM = "evroutereplayof"  # extension on an edited replay: the id of the dead letter's event


def _ids(body: dict[str, Any]) -> list[int]:
    raw = body.get("ids")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("select at least one dead letter ('ids': a list of dead-letter ids)")
    try:
        return [int(i) for i in raw]
    except (TypeError, ValueError):
        raise InvalidInput("'ids' must be dead-letter ids (numbers)") from None


def _text(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be text")
    return value


def run(console: Console, what: str, body: dict[str, Any]) -> dict[str, Any]:
    parts = what.split("/")
    if parts == ["dead-letters"] and console.reader.remote:
        return _dead_letters_remote(console, body)
    if parts == ["dead-letters"]:
        from evroute.store import deadletters

        store = console.reader.store()
        ids = _ids(body)
        op = body.get("op")
        if op == "replay":
            return {"replayed": deadletters.replay(store, ids)}
        if op == "purge":
            for i in ids:
                deadletters.get(store, i)  # NotFound names an id that is gone
            deadletters.delete(store, ids)
            return {"purged": len(ids)}
        raise InvalidInput("'op' must be 'replay' or 'purge'")
    if len(parts) == 3 and parts[0] == "dead-letters" and parts[2] == "replay-edited":
        return _replay_edited(console, int(parts[1]) if parts[1].isdigit() else -1, body)
    if len(parts) == 3 and parts[0] == "routes":
        return _route_action(console, parts[1], parts[2], body)
    if parts == ["publish"]:
        return _publish(console, body)
    raise NotFound(f"no console action '{what}'")


def _dead_letters_remote(console: Console, body: dict[str, Any]) -> dict[str, Any]:
    """Replay through the store seam (a NATS store: records in EVROUTE_DLQ)."""
    seam = console.reader.seam()
    ids = _ids(body)
    op = body.get("op")
    if op not in ("replay", "purge"):
        raise InvalidInput("'op' must be 'replay' or 'purge'")
    for i in ids:
        seam.dead_letter(i)  # NotFound names an id that is gone
    if op == "purge":
        raise InvalidInput(
            "on a NATS store the console replays dead letters; purge them with evroute dlq purge"
        )
    return {"replayed": seam.replay(ids)}


def _data(text: str | None) -> bytes | None:
    if text is None or not text.strip():
        return None
    try:
        json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"data is not valid JSON ({exc})") from None
    return text.encode("utf-8")


def _replay_edited(console: Console, dlq_id: int, body: dict[str, Any]) -> dict[str, Any]:
    from evroute.cloudevent import make_event
    from evroute.publish import publish_event
    from evroute.store import deadletters

    letter = deadletters.get(console.reader.store(), dlq_id)
    old = letter.event
    attrs = old.attributes
    extensions = {
        k: v
        for k, v in attrs.items()
        if k
        not in ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema")
    }
    extensions[REPLAYED_FROM] = old.id
    event = make_event(
        type=str(attrs["type"]),
        source=str(attrs["source"]),
        subject=attrs.get("subject"),  # type: ignore[arg-type]
        data=_data(_text(body, "data")),
        datacontenttype="application/json",
        extensions=extensions,
    )
    result = publish_event(console.where, console.routes, letter.broker, event, console.credentials)
    if result.seq is not None and letter.seq is not None:
        from evroute.store import links

        links.add(console.reader.store(), links.Link(result.seq, letter.seq, links.REPLAY, letter.route))
    return {"id": event.id, "seq": result.seq, "location": f"/ui/events/{result.seq}"}


def _route_action(console: Console, name: str, what: str, body: dict[str, Any]) -> dict[str, Any]:
    if what in ("pause", "resume"):
        from evroute.routes.edit import set_paused

        if console.reader.remote:
            raise InvalidInput(
                "on a NATS store the routes live in the cluster: set 'paused' in the routes file "
                "and run evroute routes apply"
            )

        changed = set_paused(console.routes, name, what == "pause")
        return {"route": name, "paused": what == "pause", "changed": changed}
    if what == "reset-preview":
        return console.reader.reset_preview(name, _text(body, "to", True) or "")
    if what == "reset":
        to = _text(body, "to", True) or ""
        if console.reader.remote:
            return {"route": name, "position": console.reader.seam().reset(name, to)}
        from evroute.store import cursors

        position = cursors.reset(console.reader.store(), name, to)
        return {"route": name, "position": position}
    if what == "test":
        return _test(console, name, body)
    raise NotFound(f"no route action '{what}'")


def _test(console: Console, name: str, body: dict[str, Any]) -> dict[str, Any]:
    from evroute.cloudevent import from_dict

    route = console.reader.routeset().by_name().get(name)
    if route is None:
        raise NotFound(f"route '{name}' is not in the routes file")
    text = _text(body, "event", True) or ""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"the event is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InvalidInput("the event must be a JSON object of CloudEvent attributes")
    obj = {"specversion": "1.0", "id": "test", "source": "/test", **obj}
    event = from_dict(obj)
    failed = route.matcher.explain(event.attributes)
    return {"route": name, "matched": failed is None, "failed_filter": failed}


def _publish(console: Console, body: dict[str, Any]) -> dict[str, Any]:
    from evroute.publish import event_from_options, publish_event

    broker = _text(body, "broker") or "default"
    event = event_from_options(
        type=_text(body, "type", True),
        source=_text(body, "source"),
        subject=_text(body, "subject"),
        data=(_text(body, "data") or "").encode("utf-8") or None,
    )
    result = publish_event(console.where, console.routes, broker, event, console.credentials)
    return {
        "id": event.id,
        "seq": result.seq,
        "duplicate": bool(result.duplicates),
        "location": None if result.seq is None else f"/ui/events/{result.seq}",
    }


__all__ = ["REPLAYED_FROM", "run"]
