"""kill -9 of a worker while its ingress takes requests in shared commits: every event it
answered 202 for is in the database afterwards (a 202 is sent only after the commit)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from pathlib import Path

import aiohttp

from tests.helpers import evroute, free_port, wait_until

CONCURRENCY = 32


def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes: []\n")
    port = free_port()
    worker = evroute(tmp_path, "worker", "-q", "--listen", f"127.0.0.1:{port}", stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    acknowledged: set[str] = set()

    def up() -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    async def load() -> None:
        counter = iter(range(1_000_000))
        async with aiohttp.ClientSession() as session:

            async def client() -> None:
                for n in counter:
                    headers = {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/k", "ce-id": f"k{n}"}
                    try:
                        async with session.post(url, data=b"{}", headers=headers) as resp:
                            if resp.status == 202:
                                acknowledged.add(f"k{n}")
                    except aiohttp.ClientError:
                        return  # the worker is gone

            async def killer() -> None:
                while len(acknowledged) < 500:
                    await asyncio.sleep(0.005)
                worker.send_signal(signal.SIGKILL)

            await asyncio.gather(killer(), *(client() for _ in range(CONCURRENCY)))

    try:
        wait_until(up, 30, "the ingress listening")
        asyncio.run(asyncio.wait_for(load(), 120))
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)
    assert worker.returncode == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "ev.db") as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM events")}
    assert len(acknowledged) >= 500
    assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
