"""Noticing commits by other processes (publishers, `dlq replay`, `subscribe reset`) without
keeping a core busy.

Every commit in WAL mode writes to the ``-wal`` file, so the kernel tells us (inotify, read
on the event loop by :mod:`evroute.dirwatch`; watchdog's threads where that is not
available) the moment another process commits; only then does the worker compare
SQLite's ``PRAGMA data_version``. While events keep coming (another process committed within
the last second; the worker's own writes, such as its heartbeat, do not count) the version is
checked every 2 ms, which is faster than the notification's
trip through watchdog's threads and covers the moment between the file write and the commit
becoming visible in the shared index; an idle worker waits for the signal, and checks once
every ``SAFETY`` seconds in any case (and for 50 ms after each signal, as the commit may not
show yet when the file is written). Where no file notifications exist,
the version is polled every 2 ms as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("evroute.store")

POLL_INTERVAL = 0.002  # while busy: wakes on other processes' commits within ~2 ms
BURST = 1.0  # after another process's commit, keep checking this long at POLL_INTERVAL
SHORT = 0.05  # after a file signal with no visible commit yet (or the worker's own write)
SAFETY = 0.5  # idle: check at least this often even without a signal


class WalWatch:
    """Sets an asyncio event whenever the database's WAL file is written (by anyone)."""

    def __init__(self, db_path: str) -> None:
        self.path = os.path.abspath(db_path) + "-wal"
        self.signal = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._pending = threading.Event()
        self._observer: Any = None
        self._inotify: Any = None

    def start(self) -> bool:
        """Start watching; False where the platform has no file notifications."""
        from evroute import dirwatch

        folder, name = os.path.split(self.path)
        self._inotify = dirwatch.watch(folder, [name], self._deliver)
        if self._inotify is not None:
            return True  # read on the loop itself: no thread (see evroute.dirwatch)
        return self._start_observer()

    def _start_observer(self) -> bool:
        """watchdog's observer (threads), where inotify cannot be read on the loop."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
            from watchdog.observers.polling import PollingObserver
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return False
        target, fire = self.path, self._fire

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.src_path == target:
                    fire()

        observer = Observer()
        if isinstance(observer, PollingObserver):
            return False
        try:
            observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            logger.debug("no file notifications for %s (%s): polling instead", self.path, exc)
            return False
        self._observer = observer
        return True

    def _fire(self) -> None:
        # Called on watchdog's thread for every write: hand over to the loop once per wake-up.
        if not self._pending.is_set():
            self._pending.set()
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:
                pass  # the loop is closed: the worker is stopping

    def _deliver(self) -> None:
        self._pending.clear()
        self.signal.set()

    def stop(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


async def watch_commits(
    db_path: str, version: Callable[[], int], changed: Callable[[], None], poll: float = POLL_INTERVAL
) -> None:
    """Call ``changed()`` whenever another connection committed (``version()`` moved); while
    commits keep coming the version is looked at every ``poll`` seconds."""
    watch = WalWatch(db_path)
    last = version()
    notified = watch.start()
    # A commit made before the baseline was taken (while the routes' first reads ran, or
    # while the watch started) would otherwise go unnoticed until the next one: look once.
    changed()
    try:
        busy_until = time.monotonic() + BURST
        while True:
            now = time.monotonic()
            if not notified or now < busy_until:
                await asyncio.sleep(poll)
            else:
                try:
                    await asyncio.wait_for(watch.signal.wait(), SAFETY)
                except TimeoutError:
                    pass
            if watch.signal.is_set():
                watch.signal.clear()
                busy_until = max(busy_until, time.monotonic() + SHORT)
            current = version()
            if current != last:
                last = current
                busy_until = time.monotonic() + BURST
                changed()
    finally:
        watch.stop()
