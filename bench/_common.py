"""Shared by the benchmarks: a no-work HTTP receiver in its own process, free ports, tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = """
import sys
from aiohttp import web
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
async def ok(request):
    await request.read()
    return web.Response(status=200)
app = web.Application()
app.router.add_post("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port}")


class ReceiverProcess:
    """An aiohttp server that answers 200 and does nothing else, in another process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port)])
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["figure", "evroute", "reference", "ratio", "goal", "met"]
    lines = [headers]
    for r in rows:
        lines.append([str(r.get(h, "")) for h in headers])
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def row(
    figure: str, ours: float, ref: float, unit: str, goal: str, met: bool, ratio: float | None = None
) -> dict[str, Any]:
    value = ratio if ratio is not None else (ours / ref if ref else float("nan"))
    return {
        "figure": figure,
        "evroute": f"{ours:,.1f} {unit}",
        "reference": f"{ref:,.1f} {unit}",
        "ratio": f"{value:.2f}",
        "goal": goal,
        "met": "yes" if met else "NO",
    }
