"""The log behind the seam: append with dedup, the stored event, listing, finding."""

from __future__ import annotations

import asyncio

from contract.stores import StoreCase
from evroute.cloudevent import make_event


def ev(i: int | str, source: str = "/shop", type: str = "order.placed", **kw: object):  # type: ignore[no-untyped-def]
    return make_event(type=type, source=source, id=str(i), **kw)  # type: ignore[arg-type]


def test_append_and_read_back_per_broker(store: StoreCase) -> None:
    with store.store() as s:
        result = s.append("default", [ev(1), ev(2, data=b'{"a":1}', datacontenttype="application/json")])
        assert (result.stored, result.duplicates) == (2, 0)
        first, second = result.seqs
        assert first is not None and second is not None and first < second
        s.append("other", [ev(3)])
        s.append("default", [ev(4, subject="s", extensions={"tenant": "acme", "n": 5, "ok": True})])

        got = s.events(broker="default", limit=100)
        assert [e.event.id for e in got] == ["1", "2", "4"]
        assert [e.seq for e in got] == sorted(e.seq for e in got)
        assert got[1].event.data == b'{"a":1}'
        assert got[2].event.extensions == {"tenant": "acme", "n": 5, "ok": True}
        assert got[2].event.subject == "s"
        assert [e.event.id for e in s.events(broker="other")] == ["3"]
        assert s.lag("default", got[0].seq) == 2
        assert s.event(got[2].seq).event.id == "4"  # type: ignore[union-attr]


def test_stored_event_is_the_published_event(store: StoreCase) -> None:
    event = ev("x", subject="sub", data=b"\x00\xffraw", datacontenttype="application/octet-stream")
    with store.store() as s:
        s.append("default", [event])
        [stored] = s.events(broker="default")
    assert stored.event == event
    assert stored.broker == "default" and stored.published_at > 0


def test_duplicates_are_skipped_by_broker_source_and_id(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(1)])
        again = s.append("default", [ev(1, type="changed")])
        assert (again.stored, again.duplicates) == (0, 1)
        assert again.seqs in ((), (None,))
        # The same id from another source, or into another broker, is another event.
        other = s.append("default", [ev(1, source="/billing")])
        elsewhere = s.append("audit", [ev(1)])
        assert other.stored == 1 and elsewhere.stored == 1
        # A large batch counts duplicates inside itself and against the log.
        batch = [ev(i) for i in range(20)] + [ev(5), ev(6)]
        result = s.append("default", batch)
        assert (result.stored, result.duplicates) == (19, 3)
        assert len(s.events(limit=1000)) == 22
        [first] = s.find("1", broker="default")[:1]
        assert first.event.type == "order.placed"  # the first one stored wins


def test_append_each_counts_every_request_on_its_own(store: StoreCase) -> None:
    """The ingress's shared commit: several requests at once, in arrival order, each with its
    own stored/duplicate counts."""
    requests = [
        ("default", [ev(1)]),
        ("default", [ev(1)]),  # a duplicate of the request before it
        ("other", [ev(2), ev(3), ev(2)]),
        ("default", [ev(4), ev(1)]),
    ]
    with store.store() as s:
        d = s.deliveries()
        results = asyncio.run(d.append_each(requests, 1.0))
        assert [(r.stored, r.duplicates) for r in results] == [(1, 0), (0, 1), (2, 1), (1, 1)]
        assert [e.event.id for e in s.events(broker="default")] == ["1", "4"]
        assert [e.event.id for e in s.events(broker="other")] == ["2", "3"]


def test_append_all_stores_every_chunk_or_none(store: StoreCase) -> None:
    def chunks(fail: bool):  # type: ignore[no-untyped-def]
        yield [ev(f"a{i}") for i in range(5)]
        yield [ev(f"b{i}") for i in range(5)] + [ev("a0")]
        if fail:
            raise ValueError("bad line 12")

    with store.store() as s:
        try:
            s.append_all("default", chunks(True))
        except ValueError:
            pass
        else:
            raise AssertionError("the chunks' exception must propagate")
        assert s.events(limit=100) == []
        result = s.append_all("default", chunks(False))
        assert (result.stored, result.duplicates) == (10, 1)


def test_listing_newest_window_oldest_first(store: StoreCase) -> None:
    with store.store() as s:
        s.append("default", [ev(i, type="a" if i % 2 else "b") for i in range(10)])
        s.append("x", [ev("x1", type="a")])
        assert [e.event.id for e in s.events(limit=3)] == ["8", "9", "x1"]
        assert [e.event.id for e in s.events(broker="default", type="a", limit=2)] == ["7", "9"]
