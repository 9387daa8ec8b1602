"""A small supervisor for the worker's background loops (cursor commits, wake-ups,
checkpoints, the retry scheduler, every route's dispatcher, the lease heartbeat).

A loop that raises is logged once (with its traceback), backed off and started again; the
worker goes on. Further failures of the same streak are logged at debug level only, so a
database that stays unwritable does not flood the log. ``degraded()`` names the loops that
failed recently, for health reporting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger("evroute.worker")

FIRST_BACKOFF = 0.1
MOST_BACKOFF = 5.0
HEALTHY_AFTER = 30.0  # a loop that ran this long since its last failure starts a new streak


class Supervisor:
    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        first: float = FIRST_BACKOFF,
        most: float = MOST_BACKOFF,
    ) -> None:
        self.sleep = sleep
        self.first = first
        self.most = most
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``loop()`` under supervision until it returns or :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(self._keep(name, loop), name=name)
        self.tasks[name] = task
        task.add_done_callback(lambda t: self.tasks.pop(name, None) if self.tasks.get(name) is t else None)
        return task

    async def _keep(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        delay = self.first
        streak = False
        while True:
            started = time.monotonic()
            try:
                await loop()
                self._failed_at.pop(name, None)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                if streak and now - started >= HEALTHY_AFTER:
                    streak, delay = False, self.first
                if not streak:
                    streak = True
                    logger.warning(
                        "%s loop failed: %s; restarting it (further failures logged at debug level)",
                        name,
                        exc,
                        exc_info=True,
                    )
                else:
                    logger.debug("%s loop failed again: %s", name, exc)
                self._failed_at[name] = now
            await self.sleep(delay)
            delay = min(delay * 2, self.most)

    def degraded(self) -> list[str]:
        """Loops that failed within the last ``HEALTHY_AFTER`` seconds."""
        now = time.monotonic()
        return sorted(n for n, at in self._failed_at.items() if now - at < HEALTHY_AFTER)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
