"""The console's HTML: plain string templates, every value escaped on the way in.

Each page is a frame (``page``) around sections; the live sections are rendered by the same
functions the server-sent-event stream calls, so a page and its live updates never differ.
Nothing here renders a secret: routes arrive already masked (``routes/show.py``,
``inspect.py``), and the token is never put into a page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from evroute.clock import rfc3339
from evroute.store.deadletters import DeadLetter

NAV = (
    ("/ui/", "Overview"),
    ("/ui/events", "Events"),
    ("/ui/dead-letters", "Dead letters"),
    ("/ui/send", "Send"),
)


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, csrf: str, active: str, stream: str | None = None) -> str:
    links = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{e(label)}</a>' for href, label in NAV
    )
    live = f' data-stream="{e(stream)}"' if stream else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="{e(csrf)}">
<title>{e(title)} · evroute</title>
<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/static/app.css">
<script src="/ui/static/app.js" defer></script>
</head><body>
<header><a class="brand" href="/ui/">evroute</a><nav>{links}</nav><span id="live" class="live">offline</span></header>
<main{live}>
<h1>{e(title)}</h1>
{body}
</main></body></html>"""


def login(error: str | None, next_url: str) -> str:
    message = f'<p class="error">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · evroute</title>
<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/static/app.css"></head>
<body class="login"><main><h1>evroute console</h1>{message}
<form method="post" action="/ui/login">
<input type="hidden" name="next" value="{e(next_url)}">
<label>Token <input type="password" name="token" autofocus autocomplete="current-password"></label>
<button type="submit">Sign in</button></form>
<p class="hint">The token is the worker's <code>--token</code> (or <code>$EVROUTE_TOKEN</code>), or the one
<code>evroute ui</code> printed when it started.</p></main></body></html>"""


# --------------------------------------------------------------------------- overview


def sparkline(values: Sequence[float], width: int = 120, height: int = 24) -> str:
    if len(values) < 2:
        return (
            f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="no data yet"></svg>'
        )
    top = max(max(values), 1.0)
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" role="img" '
        f'aria-label="deliveries per second, now {values[-1]:.1f}"><polyline points="{points}"/></svg>'
    )


def picture(routes: Sequence[dict[str, Any]]) -> str:
    """Brokers → routes → subscribers, as an SVG drawn from the status rows."""
    if not routes:
        return '<p class="empty">No routes yet: add one with <code>evroute subscribe add</code>.</p>'
    row_h, top = 44, 16
    height = top * 2 + row_h * len(routes)
    brokers: dict[str, list[int]] = {}
    for i, r in enumerate(routes):
        brokers.setdefault(r["broker"], []).append(i)
    parts = [
        f'<svg class="picture" viewBox="0 0 900 {height}" width="100%" role="img" aria-label="brokers, routes and subscribers">'
    ]
    for broker, rows in brokers.items():
        y = top + row_h * (sum(rows) / len(rows)) + 4
        for i in rows:
            ry = top + row_h * i + 4
            parts.append(f'<path class="edge" d="M190,{y + 14} C240,{y + 14} 240,{ry + 14} 290,{ry + 14}"/>')
        parts.append(
            f'<g class="broker"><rect x="10" y="{y}" width="180" height="28" rx="6"/>'
            f'<text x="100" y="{y + 19}">{e(broker)}</text></g>'
        )
    for i, r in enumerate(routes):
        y = top + row_h * i + 4
        state = "paused" if r.get("paused") else "open" if r.get("breaker") == "open" else "ok"
        if r.get("subscriber") is None:
            state = "removed"
        parts.append(
            f'<a href="/ui/routes/{quote(r["name"])}"><g class="route {state}">'
            f'<rect x="290" y="{y}" width="220" height="28" rx="6"/>'
            f'<text x="400" y="{y + 19}">{e(r["name"])} · lag {e(r["lag"] if r["lag"] is not None else "-")}</text></g></a>'
            f'<path class="edge" d="M510,{y + 14} L600,{y + 14}"/>'
            f'<g class="sink"><rect x="600" y="{y}" width="290" height="28" rx="6"/>'
            f'<text x="745" y="{y + 19}">{e(_short(r.get("subscriber") or "(not in routes file)", 40))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def worker_line(worker: dict[str, Any]) -> str:
    if worker["state"] == "running":
        return f'<span class="ok">running</span> · pid {e(worker["pid"])} since {e(worker["since"])}'
    return (
        '<span class="bad">not running</span> · nothing is delivered until <code>evroute worker</code> runs'
    )


def route_rows(routes: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in routes:
        name = r["name"]
        paused = {True: "paused", False: "", None: "removed"}[r["paused"]]
        out.append(
            f'<tr data-route="{e(name)}"><td><a href="/ui/routes/{quote(name)}">{e(name)}</a></td>'
            f"<td>{e(r['broker'])}</td><td class=num>{e(r['lag'])}</td><td class=num>{e(r['in_flight'])}</td>"
            f"<td>{sparkline(r.get('rates', []))}</td>"
            f"<td class=num>{e(r['retrying'])}</td><td class=num>{e(r['dead_letters'])}</td>"
            f"<td class=num>{e(r['delivered'])}</td><td class=num>{e(r['failed'])}</td>"
            f'<td class="breaker {e(r["breaker"])}">{e(r["breaker"])}</td><td>{paused}</td>'
            f'<td class="err">{e(_short(r["last_error"] or "", 80))}</td></tr>'
        )
    return "".join(out) or '<tr><td colspan="12" class="empty">no routes</td></tr>'


def overview_sections(doc: dict[str, Any]) -> dict[str, str]:
    problem = f'<p class="warn">{e(doc["problem"].splitlines()[0])}</p>' if doc.get("problem") else ""
    return {
        "worker": worker_line(doc["worker"]) + problem,
        "picture": picture(doc["routes"]),
        "routes-body": route_rows(doc["routes"]),
    }


def overview(doc: dict[str, Any]) -> str:
    s = overview_sections(doc)
    return f"""<section><h2>Worker</h2><p id="worker">{s["worker"]}</p></section>
<section><h2>Brokers → routes → subscribers</h2><div id="picture">{s["picture"]}</div></section>
<section><h2>Routes</h2><table class="grid"><thead><tr><th>route</th><th>broker</th><th>lag</th>
<th>in flight</th><th>deliveries/s</th><th>retrying</th><th>dead</th><th>delivered</th><th>failed</th>
<th>breaker</th><th>paused</th><th>last error</th></tr></thead><tbody id="routes-body">{s["routes-body"]}</tbody></table></section>"""


# --------------------------------------------------------------------------- events


def outcome_badges(items: Iterable[dict[str, Any]]) -> str:
    return " ".join(
        f'<span class="badge {e(o["outcome"])}">{e(o["route"])} {e(o["outcome"])}'
        f"{'' if o['status'] is None else ' ' + e(o['status'])}</span>"
        for o in items
    )


def event_rows(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        ev = r["event"]
        key = r["seq"] if r["seq"] is not None else ev.get("id")
        out.append(
            f'<tr data-seq="{e(r["seq"])}"><td class=num><a href="/ui/events/{quote(str(key))}">{e(r["seq"])}</a></td>'
            f"<td>{e(r['published_at'] or '')}</td><td>{e(r['broker'])}</td>"
            f'<td class="id"><a href="/ui/events/{quote(str(key))}">{e(ev.get("id"))}</a></td>'
            f"<td>{e(ev.get('type'))}</td><td>{e(ev.get('source', ''))}</td>"
            f"<td>{outcome_badges(r.get('outcomes', []))}</td></tr>"
        )
    return "".join(out) or '<tr><td colspan="7" class="empty">no events match</td></tr>'


def events(filters: dict[str, str], doc: dict[str, Any], routes: Sequence[str]) -> str:
    def field(name: str, label: str) -> str:
        return f'<label>{e(label)} <input name="{name}" value="{e(filters.get(name, ""))}"></label>'

    route_options = "".join(
        f"<option{' selected' if filters.get('route') == n else ''}>{e(n)}</option>" for n in routes
    )
    outcome_options = "".join(
        f"<option{' selected' if filters.get('outcome') == o else ''}>{o}</option>"
        for o in ("delivered", "retrying", "dead")
    )
    return f"""<form class="filters" method="get" action="/ui/events">
{field("q", "id or seq")}{field("broker", "broker")}{field("type", "type")}{field("source", "source")}
<label>route <select name="route"><option value="">any</option>{route_options}</select></label>
<label>outcome <select name="outcome"><option value="">any</option>{outcome_options}</select></label>
<button type="submit">Filter</button> <a href="/ui/events">clear</a></form>
<table class="grid"><thead><tr><th>seq</th><th>published</th><th>broker</th><th>id</th><th>type</th>
<th>source</th><th>outcomes</th></tr></thead><tbody id="events-body">{event_rows(doc["rows"])}</tbody></table>"""


# --------------------------------------------------------------------------- one event


def timeline(entry: dict[str, Any]) -> str:
    items = entry.get("attempts") or []
    if not items:
        recent = entry.get("recent") or []
        if recent:
            return "".join(
                f'<li class="{e(o["outcome"])}">#{e(o["attempt"])} {e(o["at"])} → {e(o["outcome"])} '
                f"{e(o['status'])} · {e(o['latency_ms'])} ms</li>"
                for o in recent
            )
        return ""
    return "".join(
        f'<li class="{"success" if a["error"] is None else "failure"}">#{e(a["attempt"])} {e(a["at"])} → '
        f"{e('-' if a['status'] is None else a['status'])} · {e(a['duration_ms'])} ms"
        f"{' · ' + e(a['error']) if a['error'] else ''}</li>"
        for a in items
    )


def event_routes(doc: dict[str, Any]) -> str:
    out = []
    for r in doc["routes"]:
        detail = []
        if r["next_due"]:
            detail.append(f"next attempt {e(r['next_due'])}")
        if r["dlq_id"] is not None:
            detail.append(
                f'<a href="/ui/dead-letters?route={quote(r["route"])}">dead letter {e(r["dlq_id"])}</a>'
            )
        if r["failed_filter"]:
            detail.append(f"filter: {e(r['failed_filter'])}")
        if r["last_error"]:
            detail.append(f"last error: {e(r['last_error'])}")
        out.append(
            f'<section class="route-state" data-route="{e(r["route"])}"><h3><a href="/ui/routes/{quote(r["route"])}">'
            f'{e(r["route"])}</a> <span class="badge {e(r["state"])}">{e(r["state"])}</span></h3>'
            f'<p>{" · ".join(detail)}</p><ol class="timeline">{timeline(r)}</ol></section>'
        )
    return "".join(out) or "<p>No route of this event's broker is in the routes file.</p>"


def linked(links: dict[str, Any]) -> str:
    """Replies and edited replays, both ways."""
    items = []
    parent = links.get("parent")
    if parent is not None:
        what = "reply to" if parent["kind"] == "reply" else "edited replay of"
        items.append(
            f'<li class="parent">{what} <a href="/ui/events/{e(parent["seq"])}">seq {e(parent["seq"])}</a>'
            f" (route {e(parent['route'])})</li>"
        )
    for child in links.get("children", []):
        what = "reply" if child["kind"] == "reply" else "edited replay"
        items.append(
            f'<li class="child">{what} <a href="/ui/events/{e(child["seq"])}">seq {e(child["seq"])}</a>'
            f" (route {e(child['route'])})</li>"
        )
    return f'<ul class="links">{"".join(items)}</ul>' if items else ""


def event(doc: dict[str, Any]) -> str:
    ev = doc["event"]
    attrs = "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in ev.items() if k not in ("data", "data_base64")
    )
    return f"""<p>seq {e(doc["seq"])} · broker {e(doc["broker"])} · published {e(doc["published_at"] or "(log row gone)")}</p>
{linked(doc.get("links") or {})}
<div class="two"><section><h2>Attributes</h2><table class="attrs">{attrs}</table></section>
<section><h2>Data</h2><pre class="data">{e(doc["data_pretty"])}</pre></section></div>
<section><h2>Routes</h2>{no_timeline(doc)}<div id="event-routes">{event_routes(doc)}</div></section>"""


def no_timeline(doc: dict[str, Any]) -> str:
    """The store keeps no attempt history (NATS): say so, once, above the routes."""
    if doc.get("timeline", True):
        return ""
    return (
        '<p class="note">This store (NATS JetStream) keeps no attempt history: no timeline of '
        "attempts here, only each route's state and the recent outcomes.</p>"
    )


# --------------------------------------------------------------------------- dead letters


def dead_letter_rows(letters: Sequence[DeadLetter]) -> str:
    out = []
    for d in letters:
        key = d.seq if d.seq is not None else d.event.id
        out.append(
            f'<tr data-id="{d.id}"><td><input type="checkbox" name="ids" value="{d.id}" aria-label="select {d.id}"></td>'
            f"<td class=num>{d.id}</td><td>{e(d.route)}</td>"
            f'<td class="id"><a href="/ui/events/{quote(str(key))}">{e(d.event.id)}</a></td><td>{e(d.event.type)}</td>'
            f"<td class=num>{d.attempts}</td><td>{e(d.status)}</td><td>{e(d.reason)}</td>"
            f'<td class="err">{e(_short(d.error or "", 60))}</td><td>{e(rfc3339(d.dead_at))}</td>'
            f"<td>{'replayed ' + e(rfc3339(d.replayed_at)) if d.replayed_at else ''}</td>"
            f'<td><details><summary>edit &amp; replay</summary><form data-action="/ui/api/dead-letters/{d.id}/replay-edited" '
            f'data-reload="1"><textarea name="data" rows="4" cols="40">{e(_data_text(d))}</textarea>'
            f'<button type="submit">Replay as a new event</button><span class="result"></span></form></details></td></tr>'
        )
    return "".join(out) or '<tr><td colspan="12" class="empty">no dead letters</td></tr>'


def _data_text(d: DeadLetter) -> str:
    if d.event.data is None:
        return ""
    try:
        return json.dumps(json.loads(d.event.data), indent=2, ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        return bytes(d.event.data).decode("utf-8", "replace")


def dead_letters(filters: dict[str, str], letters: Sequence[DeadLetter], routes: Sequence[str]) -> str:
    options = "".join(
        f"<option{' selected' if filters.get('route') == n else ''}>{e(n)}</option>" for n in routes
    )
    reasons = "".join(
        f"<option{' selected' if filters.get('reason') == r else ''}>{r}</option>"
        for r in ("retries exhausted", "permanent failure", "hop limit")
    )
    query = urlencode({k: v for k, v in filters.items() if v})
    return f"""<form class="filters" method="get" action="/ui/dead-letters">
<label>route <select name="route"><option value="">any</option>{options}</select></label>
<label>reason <select name="reason"><option value="">any</option>{reasons}</select></label>
<button type="submit">Filter</button> <a href="/ui/dead-letters">clear</a></form>
<form id="dl-bulk" data-action="/ui/api/dead-letters" data-reload="1" data-query="{e(query)}">
<p><button type="submit" name="op" value="replay" data-confirm="Replay the selected dead letters?">Replay selected</button>
<button type="submit" name="op" value="purge" data-confirm="Delete the selected dead letters for good?">Purge selected</button>
<label><input type="checkbox" class="select-all"> select all</label> <span class="result"></span></p>
<table class="grid"><thead><tr><th></th><th>id</th><th>route</th><th>event</th><th>type</th><th>attempts</th>
<th>status</th><th>reason</th><th>error</th><th>dead at</th><th>replay</th><th></th></tr></thead>
<tbody id="dead-body">{dead_letter_rows(letters)}</tbody></table></form>"""


# --------------------------------------------------------------------------- one route


def route(doc: dict[str, Any]) -> str:
    d, s = doc["definition"], doc["status"]
    name = d["name"]
    attempts = "".join(
        f'<li class="{"success" if a["error"] is None else "failure"}"><a href="/ui/events/{e(a["seq"])}">seq {e(a["seq"])}</a> '
        f"#{e(a['attempt'])} {e(a['at'])} → {e(a['status'])} {e(a['error'] or '')}</li>"
        for a in doc["attempts"]
    )
    toggle = "resume" if d["paused"] else "pause"
    return f"""<div class="two"><section><h2>Definition</h2><pre class="data">{e(json.dumps(d, indent=2, ensure_ascii=False))}</pre></section>
<section><h2>State</h2><p id="route-state">{route_state(s)}</p>
<form data-action="/ui/api/routes/{quote(name)}/{toggle}" data-reload="1"><button type="submit">{toggle.capitalize()}</button>
<span class="result"></span></form>
<h2>Reset the cursor</h2>
<form data-action="/ui/api/routes/{quote(name)}/reset" data-preview="/ui/api/routes/{quote(name)}/reset-preview"
 data-confirm="Move the cursor?" data-reload="1"><label>to <input name="to" placeholder="earliest | latest | seq | 2026-01-02T15:04:05Z" required></label>
<button type="button" class="preview">Preview</button> <button type="submit">Reset</button> <span class="result"></span></form>
<h2>Test an event</h2>
<form data-action="/ui/api/routes/{quote(name)}/test"><textarea name="event" rows="6" cols="50">{{"type": "", "source": "/test"}}</textarea>
<button type="submit">Test</button> <span class="result"></span></form></section></div>
<section><h2>Recent failed attempts</h2><ol class="timeline">{attempts or "<li>none recorded</li>"}</ol></section>"""


def route_state(s: dict[str, Any]) -> str:
    return (
        f"cursor {e(s['cursor'])} · lag {e(s['lag'])} · in flight {e(s['in_flight'])} · retrying {e(s['retrying'])} · "
        f"dead letters {e(s['dead_letters'])} · breaker {e(s['breaker'])} · {'paused' if s['paused'] else 'running'}"
    )


# --------------------------------------------------------------------------- send


def send(doc: dict[str, Any], chosen: str | None) -> str:
    ev = doc["event"] or {}
    data = ev.get("data")
    data_text = "" if data is None else json.dumps(data, indent=2, ensure_ascii=False)
    options = "".join(f"<option{' selected' if t == chosen else ''}>{e(t)}</option>" for t in doc["types"])
    return f"""<form class="filters" method="get" action="/ui/send"><label>pre-fill from the last event of type
<select name="from"><option value="">(none)</option>{options}</select></label> <button type="submit">Fill</button></form>
<form id="send" data-action="/ui/api/publish">
<label>broker <input name="broker" value="{e(doc["broker"])}" required></label>
<label>type <input name="type" value="{e(ev.get("type", ""))}" required></label>
<label>source <input name="source" value="{e(ev.get("source", "/evroute/console"))}"></label>
<label>subject <input name="subject" value="{e(ev.get("subject", ""))}"></label>
<label>data (JSON) <textarea name="data" rows="8" cols="60">{e(data_text)}</textarea></label>
<button type="submit">Publish</button> <span class="result"></span></form>"""


__all__ = ["overview", "overview_sections", "page"]
