"""Route positions behind the seam: where a new route starts, batched commits guarded by the
epoch, ``subscribe reset`` targets, ``subscribe remove --purge``."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from contract.stores import StoreCase
from evroute.cloudevent import make_event
from evroute.errors import InvalidInput, NotFound
from evroute.store.base import NewDeadLetter, Progress, Retry, RouteStart


def ev(i: int | str):  # type: ignore[no-untyped-def]
    return make_event(type="order.placed", source="/shop", id=str(i))


def test_new_routes_start_at_latest_or_earliest(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(i) for i in range(5)])
        end = s.events(limit=1)[0].seq
        created = s.ensure_routes(
            [RouteStart("a", "default", "latest"), RouteStart("b", "default", "earliest")]
        )
        assert created == ["a", "b"]
        a, b = s.cursor("a"), s.cursor("b")
        assert a is not None and b is not None
        assert (a.position, b.position) == (end, 0)
        assert s.lag("default", a.position) == 0 and s.lag("default", b.position) == 5
        # Seen before: nothing changes, even if `start` changed meanwhile.
        s.append("default", [ev("later")])
        assert s.ensure_routes([RouteStart("a", "default", "earliest")]) == []
        assert s.cursor("a").position == end  # type: ignore[union-attr]
        # Moved to another broker: restarts at its start there.
        assert s.ensure_routes([RouteStart("a", "other", "latest")]) == ["a"]
        moved = s.cursor("a")
        assert moved is not None and moved.broker == "other" and moved.epoch != a.epoch
        assert set(s.cursors()) == {"a", "b"}


def test_commit_is_conditional_on_the_epoch(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(i) for i in range(10)])
        seqs = [e.seq for e in s.events(limit=100)]
        s.ensure_routes([RouteStart("r", "default", "earliest")])
        d = s.deliveries()
        epoch = s.cursor("r").epoch  # type: ignore[union-attr]
        p = Progress("r", seqs[3], epoch, delivered=4, failed=1, last_error="boom", last_error_at=3.0)
        assert asyncio.run(d.commit([p], 5.0)) == []
        c = s.cursor("r")
        assert c is not None and (c.position, c.delivered, c.failed, c.last_error) == (seqs[3], 4, 1, "boom")
        # Positions never go back through a commit; counters add up.
        asyncio.run(d.commit([Progress("r", seqs[1], epoch, delivered=1)], 6.0))
        c = s.cursor("r")
        assert c is not None and (c.position, c.delivered, c.last_error) == (seqs[3], 5, "boom")

        assert s.reset("r", "earliest") == 0
        # The worker's commit with the old epoch is refused and reported, the reset stands.
        assert asyncio.run(d.commit([Progress("r", seqs[9], epoch)], 7.0)) == ["r"]
        c = s.cursor("r")
        assert c is not None and c.position == 0 and c.epoch != epoch
        assert asyncio.run(d.epochs())["r"] == c.epoch


def test_reset_targets(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(i) for i in range(3)], now=1000.0)
        s.append("default", [ev(i) for i in range(3, 6)], now=2000.0)
        seqs = [e.seq for e in s.events(limit=100)]
        s.ensure_routes([RouteStart("r", "default", "earliest")])
        epochs = {s.cursor("r").epoch}  # type: ignore[union-attr]
        assert s.reset("r", "latest") == seqs[5]
        assert s.reset("r", str(seqs[3])) == seqs[2]  # the next event delivered is that seq
        assert s.reset("r", "1970-01-01T00:25:00Z") == seqs[2]  # first published at/after 1500 s
        assert s.reset("r", "2100-01-01T00:00:00Z") == seqs[5]
        assert s.reset("r", "earliest") == 0
        epochs.add(s.cursor("r").epoch)  # type: ignore[union-attr]
        assert len(epochs) == 2
        with pytest.raises(InvalidInput, match="bad --to 'soon'"):
            s.reset("r", "soon")
        with pytest.raises(NotFound, match="route 'nope' has no cursor yet"):
            s.reset("nope", "latest")


def test_forget_drops_the_position_retries_and_dead_letters(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(1), ev(2)])
        one, two = (e.seq for e in s.events())
        s.ensure_routes([RouteStart("r", "default", "earliest"), RouteStart("q", "default", "earliest")])
        d = s.deliveries()
        asyncio.run(d.retry(Retry("r", one, 1, 5.0, 1.0, 500, "x", None), None))
        letter = NewDeadLetter(
            "r", "default", two, ev(2), 1, 400, "permanent failure", "HTTP 400", None, 1.0, 2.0
        )
        asyncio.run(d.dead_letter(letter, None, None))
        asyncio.run(d.dead_letter(replace(letter, route="q"), None, None))
        s.forget("r")
        assert s.cursor("r") is None
        assert s.retry_summary() == {}
        assert s.dead_letter_counts() == {"q": 1}
