"""File notifications read on the event loop (evroute.dirwatch): the worker's routes-file and
WAL wake-ups, without threads woken by every write in the folder."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from evroute import dirwatch
from evroute.cloudevent import make_event
from evroute.store import Store
from evroute.store import log as event_log
from evroute.store.wakeups import WalWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def test_a_write_to_the_watched_file_calls_back_on_the_loop_thread(tmp_path: Path) -> None:
    target = tmp_path / "routes.yaml"
    target.write_text("a")

    async def main() -> list[int]:
        calls: list[int] = []
        fired = asyncio.Event()

        def changed() -> None:
            calls.append(threading.get_ident())
            fired.set()

        threads = threading.active_count()
        dw = dirwatch.watch(str(tmp_path), ["routes.yaml"], changed)
        assert dw is not None
        assert threading.active_count() == threads  # no thread: the loop reads the descriptor
        try:
            target.write_text("b")
            await asyncio.wait_for(fired.wait(), 5)
        finally:
            dw.close()
        return calls

    calls = asyncio.run(main())
    assert calls and set(calls) == {threading.get_ident()}


def test_only_the_named_files_count_and_many_writes_read_at_once_call_once(tmp_path: Path) -> None:
    async def main() -> None:
        calls: list[str] = []
        dw = dirwatch.watch(str(tmp_path), ["ev.db-wal"], lambda: calls.append("x"))
        assert dw is not None
        try:
            # The kernel queues the event as the write returns: reading right after is exact.
            (tmp_path / "routes.yaml").write_text("other file")
            (tmp_path / "ev.db").write_bytes(b"main file")
            dw._readable()
            assert calls == []
            for n in range(5):
                with open(tmp_path / "ev.db-wal", "ab") as f:
                    f.write(b"frame %d" % n)
            dw._readable()
            assert calls == ["x"]
            dw._readable()  # nothing new
            assert calls == ["x"]
        finally:
            dw.close()

    asyncio.run(main())


def test_an_atomic_replace_and_a_removal_count(tmp_path: Path) -> None:
    target = tmp_path / "routes.yaml"
    target.write_text("a")

    async def main() -> None:
        calls: list[str] = []
        dw = dirwatch.watch(str(tmp_path), ["routes.yaml"], lambda: calls.append("x"))
        assert dw is not None
        try:
            temp = tmp_path / ".routes.yaml.tmp"
            temp.write_text("b")
            dw._readable()
            assert calls == []
            os.replace(temp, target)  # how editors and `routes edit` save
            dw._readable()
            assert calls == ["x"]
            target.unlink()
            dw._readable()
            assert calls == ["x", "x"]
        finally:
            dw.close()

    asyncio.run(main())


def test_closed_watch_reads_nothing_more_and_a_missing_folder_gives_none(tmp_path: Path) -> None:
    async def main() -> None:
        dw = dirwatch.watch(str(tmp_path), ["f"], lambda: None)
        assert dw is not None
        fd = dw.fd
        dw.close()
        with pytest.raises(OSError):
            os.fstat(fd)
        dw.close()  # twice is harmless
        assert dirwatch.watch(str(tmp_path / "missing"), ["f"], lambda: None) is None

    asyncio.run(main())


def test_a_handler_that_raises_does_not_break_the_reader(tmp_path: Path) -> None:
    async def main() -> None:
        calls: list[str] = []

        def changed() -> None:
            calls.append("x")
            raise RuntimeError("boom")

        dw = dirwatch.watch(str(tmp_path), ["f"], changed)
        assert dw is not None
        try:
            (tmp_path / "f").write_text("1")
            dw._readable()
            (tmp_path / "f").write_text("2")
            dw._readable()
            assert calls == ["x", "x"]
        finally:
            dw.close()

    asyncio.run(main())


def test_the_wal_watch_starts_no_thread_and_hears_another_connection_commit(tmp_path: Path) -> None:
    db = str(tmp_path / "ev.db")
    Store(db).close()

    async def main() -> None:
        threads = threading.active_count()
        watch = WalWatch(db)
        assert watch.start()
        try:
            assert threading.active_count() == threads
            with Store(db) as other:  # another connection commits
                event_log.append(other, "default", [make_event(type="t", source="/s", id="e-1")])
            await asyncio.wait_for(watch.signal.wait(), 5)
        finally:
            watch.stop()

    asyncio.run(main())
