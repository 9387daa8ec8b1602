"""PNG screenshots of every console page, from a seeded demo store (``make screenshots``).

Runs the order fan-out for real: three loopback subscribers (inventory answers at once,
payment fails each event's first attempt, notification is down), a real
``evroute worker --listen``, events published through its ingress, then Debian's Chromium
(driven by Playwright) signs in and photographs each page.

    python examples/screenshots.py [OUT_DIR]      # default docs/screenshots
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "demo-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subscribers() -> dict[str, int]:
    """inventory: 200; payment: 503 on an event's first attempt, then 200; notification: 500."""
    ports = {name: free_port() for name in ("inventory", "payment", "notification")}
    seen: dict[str, int] = {}

    async def inventory(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def payment(request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("ce-id", "")
        seen[key] = seen.get(key, 0) + 1
        return (
            web.Response(status=503, text="payment gateway warming up") if seen[key] == 1 else web.Response()
        )

    async def notification(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="smtp relay unreachable")

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for name, handler in (("inventory", inventory), ("payment", payment), ("notification", notification)):
            app = web.Application()
            app.router.add_post("/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", ports[name]).start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    return ports


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="evroute-screens-"))
    ports = subscribers()
    (folder / "routes.yaml").write_text(
        "routes:\n"
        f"  - {{name: inventory, broker: orders, filter: {{type: order.placed}}, subscriber: 'http://127.0.0.1:{ports['inventory']}/'}}\n"
        f"  - {{name: payment, broker: orders, filter: {{type: order.placed}}, subscriber: 'http://127.0.0.1:{ports['payment']}/', "
        "delivery: {retry: 3, backoffDelay: 200ms}}\n"
        f"  - {{name: notification, broker: orders, subscriber: 'http://127.0.0.1:{ports['notification']}/notify', "
        "delivery: {retry: 1, backoffDelay: 100ms}}\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evroute",
            "--db",
            str(folder / "ev.db"),
            "--routes",
            str(folder / "routes.yaml"),
            "worker",
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            TOKEN,
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=folder,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("the worker did not start")
            time.sleep(0.1)
        for i in range(1, 13):
            kind = "order.placed" if i % 4 else "order.cancelled"
            httpx.post(
                f"{base}/orders",
                headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "ce-specversion": "1.0",
                    "ce-id": f"order-{i}",
                    "ce-source": "/shop",
                    "ce-type": kind,
                    "Content-Type": "application/json",
                },
                content=json.dumps({"order": i, "sku": f"A-{i % 3 + 1}", "amount": 19.5 * i}),
            ).raise_for_status()
            time.sleep(0.4)
        time.sleep(2.5)  # the last retries and dead letters settle
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/ui/login")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/ui/")
            shots = [
                ("overview", "/ui/"),
                ("events", "/ui/events"),
                ("event", "/ui/events/order-1"),
                ("dead-letters", "/ui/dead-letters"),
                ("route", "/ui/routes/payment"),
                ("send", "/ui/send?from=order.placed"),
            ]
            for name, path in shots:
                page.goto(base + path)
                if name != "send":
                    page.wait_for_selector("#live.on")
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(f"wrote {out / (name + '.png')}")
            browser.close()
    finally:
        worker.terminate()
        worker.wait(20)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
