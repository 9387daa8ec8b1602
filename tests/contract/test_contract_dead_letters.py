"""Dead letters behind the seam: stored with every field, listed, counted, replayed, purged."""

from __future__ import annotations

import asyncio

import pytest

from contract.stores import StoreCase
from evroute.cloudevent import make_event
from evroute.errors import NotFound
from evroute.store.base import NewDeadLetter, RouteStart


def _letter(route: str, seq: int | None, dead_at: float) -> NewDeadLetter:
    event = make_event(
        type="order.placed", source="/shop", id=f"e{seq}", data=b'{"x":1}', datacontenttype="application/json"
    )
    return NewDeadLetter(
        route, "default", seq, event, 4, 503, "retries exhausted", "HTTP 503", b"busy", 10.0, dead_at
    )


def test_dead_letters_add_list_replay_purge(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [make_event(type="t", source="/s", id=str(i)) for i in range(2)])
        one, two = (e.seq for e in s.events())
        s.ensure_routes([RouteStart("pay", "default", "earliest"), RouteStart("inv", "default", "earliest")])
        d = s.deliveries()
        ids = [
            asyncio.run(d.dead_letter(letter, None, None))
            for letter in (
                _letter("pay", one, 100.0),
                _letter("pay", two, 200.0),
                _letter("inv", None, 300.0),
            )
        ]
        assert len(set(ids)) == 3
        letter = s.dead_letter(ids[0])
        assert (letter.route, letter.broker, letter.seq, letter.attempts, letter.status, letter.body) == (
            "pay",
            "default",
            one,
            4,
            503,
            b"busy",
        )
        assert (letter.reason, letter.error, letter.first_failed_at, letter.dead_at) == (
            "retries exhausted",
            "HTTP 503",
            10.0,
            100.0,
        )
        assert letter.event.data == b'{"x":1}' and letter.replayed_at is None
        assert [x.id for x in s.dead_letters(route="pay")] == ids[:2]
        assert [x.id for x in s.dead_letters(limit=1)] == ids[:1]
        assert s.dead_letter_counts() == {"pay": 2, "inv": 1}
        assert [x.id for x in s.dead_letters_of(seq=two)] == [ids[1]]
        assert [x.id for x in s.dead_letters_of(event_id=f"e{one}")] == [ids[0]]

        assert s.replay([ids[0], ids[2]], now=500.0) == 2
        assert s.dead_letter(ids[0]).replayed_at == 500.0
        with pytest.raises(NotFound, match=f"no dead letter with id {max(ids) + 99}"):
            s.replay([ids[1], max(ids) + 99])
        assert s.dead_letter(ids[1]).replayed_at is None  # the refused replay changed nothing

        asyncio.run(d.dls_outcome(ids[1], "delivered to http://dls/"))
        assert s.dead_letter(ids[1]).dls_outcome == "delivered to http://dls/"

        assert s.purge(route="pay", before=150.0) == 1
        assert s.purge() == 2
        assert s.dead_letters() == []
        with pytest.raises(NotFound, match=f"no dead letter with id {ids[0]}"):
            s.dead_letter(ids[0])
