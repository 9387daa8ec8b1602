"""Links between events: a reply and the event whose delivery it answered, an edited replay
and the dead letter's event it was made from. One row per linked event (replies and edited
replays only), looked up both ways, deleted with the event by retention."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from evroute.store.db import Store

REPLY = "reply"
REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class Link:
    seq: int  # the newer event: the reply, or the edited replay
    parent: int  # the event it came from
    kind: str  # reply | replay
    route: str | None  # the route whose delivery got the reply, or whose dead letter was replayed


def add(store: Store, link: Link) -> None:
    with store.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO links (seq, parent, kind, route) VALUES (?,?,?,?)",
            (link.seq, link.parent, link.kind, link.route),
        )


def of(store: Store, seq: int) -> tuple[Link | None, list[Link]]:
    """The link that made ``seq`` (if any), and the events made from ``seq``."""
    row = store.conn.execute("SELECT seq, parent, kind, route FROM links WHERE seq = ?", (seq,)).fetchone()
    children = [
        Link(*r)
        for r in store.conn.execute(
            "SELECT seq, parent, kind, route FROM links WHERE parent = ? ORDER BY seq LIMIT 100", (seq,)
        )
    ]
    return (Link(*row) if row else None), children


def delete_gone(conn: sqlite3.Connection, after: int, upto: int) -> None:
    """Inside the caller's transaction: drop the links of events in ``(after, upto]`` no longer stored."""
    conn.execute(
        "DELETE FROM links WHERE seq > ? AND seq <= ? AND seq NOT IN (SELECT seq FROM events WHERE seq > ? AND seq <= ?)",
        (after, upto, after, upto),
    )


__all__ = ["REPLAY", "REPLY", "Link", "add", "delete_gone", "of"]
