"""Noticing commits by other processes (publishers, `dlq replay`, `subscribe reset`) without
keeping a core busy.

Every commit in WAL mode writes to the ``-wal`` file, so the kernel tells us (inotify,
through watchdog) the moment another process commits; only then does the worker compare
SQLite's ``PRAGMA data_version``. The file write comes just before the commit is visible in
the shared index, so after each signal the version is also checked every 2 ms for a short
burst, and once every ``SAFETY`` seconds in any case. Where no file notifications exist,
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

logger = logging.getLogger("evroute.worker")

POLL_INTERVAL = 0.002  # while busy: wakes on other processes' commits within ~2 ms
BURST = 0.05  # after a file signal or a change, keep checking this long at POLL_INTERVAL
SAFETY = 0.5  # idle: check at least this often even without a signal


class WalWatch:
    """Sets an asyncio event whenever the database's WAL file is written (by anyone)."""

    def __init__(self, db_path: str) -> None:
        self.path = os.path.abspath(db_path) + "-wal"
        self.signal = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._pending = threading.Event()
        self._observer: Any = None

    def start(self) -> bool:
        """Start watching; False where the platform has no file notifications."""
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
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


async def watch_commits(db_path: str, version: Callable[[], int], changed: Callable[[], None]) -> None:
    """Call ``changed()`` whenever another connection committed (``version()`` moved)."""
    watch = WalWatch(db_path)
    notified = watch.start()
    try:
        last = version()
        busy_until = time.monotonic() + BURST
        while True:
            now = time.monotonic()
            if not notified or now < busy_until:
                await asyncio.sleep(POLL_INTERVAL)
            else:
                try:
                    await asyncio.wait_for(watch.signal.wait(), SAFETY)
                except TimeoutError:
                    pass
            if watch.signal.is_set():
                watch.signal.clear()
                busy_until = time.monotonic() + BURST
            current = version()
            if current != last:
                last = current
                busy_until = time.monotonic() + BURST
                changed()
    finally:
        watch.stop()
