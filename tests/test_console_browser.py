"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real ``evroute worker --listen`` process, real loopback subscribers and a real
SQLite file. Every request that leaves the loopback interface is blocked and counted: the
pages must work offline (no CDN)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from receiver import Receiver, Reply

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "console-test-token"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@dataclass
class World:
    folder: Path
    base: str
    db: Path
    flaky: Receiver
    broken: Receiver
    broken_up: dict[str, bool]
    blocked: list[str] = field(default_factory=list)

    def publish(self, type: str, event_id: str, data: dict[str, Any] | None = None) -> None:
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/browser-test",
            "ce-type": type,
            "Content-Type": "application/json",
        }
        r = httpx.post(f"{self.base}/", headers=headers, content=json.dumps(data or {"n": 1}), timeout=10)
        assert r.status_code == 202, r.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("console")
    ok = Receiver().start()
    tries: dict[str, int] = {}

    def fail_first(r):  # type: ignore[no-untyped-def]
        tries[r.ce_id] = tries.get(r.ce_id, 0) + 1
        return Reply(503, b"warming up") if tries[r.ce_id] == 1 else Reply(200)

    flaky = Receiver(fail_first).start()
    broken_up = {"up": False}
    broken = Receiver(lambda r: Reply(200) if broken_up["up"] else Reply(500, b"down")).start()
    (folder / "routes.yaml").write_text(
        "routes:\n"
        f"  - {{name: ok, filter: {{type: order.placed}}, subscriber: '{ok.url}/'}}\n"
        f"  - {{name: flaky, filter: {{type: order.flaky}}, subscriber: '{flaky.url}/', "
        "delivery: {retry: 3, backoffDelay: 100ms}}\n"
        f"  - {{name: broken, filter: {{type: order.broken}}, subscriber: '{broken.url}/', "
        "delivery: {retry: 0}, headers: {Authorization: 'Bearer ${BROKEN_SECRET}'}}\n"
    )
    port = free_port()
    db = folder / "ev.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BROKEN_SECRET": "very-secret-value"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evroute",
            "--db",
            str(db),
            "--routes",
            str(folder / "routes.yaml"),
            "worker",
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            TOKEN,
        ],
        env=env,
        cwd=folder,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert worker.poll() is None, "the worker exited"
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 30, "worker up")
        yield World(folder, base, db, flaky, broken, broken_up)
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        for r in (ok, flaky, broken):
            r.stop()


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    page: Any
    errors: list[str]
    responses: list[tuple[str, int]]


@pytest.fixture
def tab(browser: Any, world: World) -> Iterator[Tab]:
    context = browser.new_context()

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            world.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    errors: list[str] = []
    responses: list[tuple[str, int]] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: responses.append((r.url, r.status)))
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{world.base}/ui/")
    assert "/ui/login" in page.url  # no cookie yet: the sign-in page
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{world.base}/ui/")
    try:
        yield Tab(page, errors, responses)
    finally:
        context.close()


def test_every_page_loads_without_a_console_error_and_offline(tab: Tab, world: World) -> None:
    world.publish("order.placed", "page-check-1")
    wait_until(lambda: bool(query(world.db, "SELECT 1 FROM events WHERE id = 'page-check-1'")), 5, "stored")
    [(seq,)] = query(world.db, "SELECT seq FROM events WHERE id = 'page-check-1'")
    page = tab.page
    for path, heading in [
        ("/ui/", "Overview"),
        ("/ui/events", "Events"),
        (f"/ui/events/{seq}", "Event page-check-1"),
        ("/ui/dead-letters", "Dead letters"),
        ("/ui/routes/broken", "Route broken"),
        ("/ui/send?from=order.placed", "Send an event"),
    ]:
        page.goto(f"{world.base}{path}")
        assert page.locator("h1").inner_text() == heading
        if not path.startswith("/ui/send"):
            page.wait_for_selector("#live.on")  # its live stream connected
    assert tab.errors == []
    assert any(url.endswith("/ui/static/favicon.svg") and status == 200 for url, status in tab.responses)
    assert all(status < 400 for _, status in tab.responses), tab.responses
    assert world.blocked == []
    # Secrets are never rendered: the route page shows the header masked.
    page.goto(f"{world.base}/ui/routes/broken")
    assert "very-secret-value" not in page.content() and "***" in page.content()


def test_a_just_published_event_appears_in_the_live_tail_within_a_second(tab: Tab, world: World) -> None:
    page = tab.page
    page.goto(f"{world.base}/ui/events")
    page.wait_for_selector("#live.on")
    started = time.monotonic()
    world.publish("order.placed", "live-tail-1")
    page.wait_for_selector("text=live-tail-1", timeout=1000)
    assert time.monotonic() - started < 1.0
    assert tab.errors == []


def test_a_failed_then_delivered_event_shows_its_attempts_in_order(tab: Tab, world: World) -> None:
    world.publish("order.flaky", "flaky-1")

    def delivered() -> bool:
        return bool(query(world.db, "SELECT 1 FROM attempts WHERE route = 'flaky' AND outcome = 'success'"))

    wait_until(delivered, 20, "flaky delivered on its second attempt")
    [(seq,)] = query(world.db, "SELECT seq FROM events WHERE id = 'flaky-1'")
    page = tab.page
    page.goto(f"{world.base}/ui/events/{seq}")
    items = page.locator('section.route-state[data-route="flaky"] ol.timeline li').all_inner_texts()
    assert len(items) == 2, items
    assert items[0].startswith("#1 ") and "503" in items[0] and "HTTP 503" in items[0]
    assert items[1].startswith("#2 ") and "200" in items[1]
    assert page.locator('section.route-state[data-route="flaky"] .badge').inner_text() == "delivered"
    assert tab.errors == []


def test_a_bulk_replay_from_the_page_delivers_the_dead_letters(tab: Tab, world: World) -> None:
    for i in range(3):
        world.publish("order.broken", f"broken-{i}")
    wait_until(
        lambda: len(query(world.db, "SELECT id FROM dead_letters WHERE route = 'broken'")) == 3,
        20,
        "dead-lettered",
    )
    world.broken_up["up"] = True
    before = len(world.broken.requests)
    page = tab.page
    page.goto(f"{world.base}/ui/dead-letters?route=broken")
    assert page.locator("#dead-body tr[data-id]").count() == 3
    page.check("input.select-all")
    page.click("button[value=replay]")  # the confirm dialog is accepted
    wait_until(
        lambda: not query(world.db, "SELECT id FROM dead_letters WHERE route = 'broken'"), 20, "replayed"
    )
    delivered = {r.ce_id for r in world.broken.requests[before:]}
    assert delivered == {"broken-0", "broken-1", "broken-2"}
    page.wait_for_selector("#dead-body td.empty", timeout=10_000)
    assert tab.errors == []


def test_requests_without_the_token_or_the_csrf_value_are_refused(tab: Tab, world: World) -> None:
    base = world.base
    # No cookie, no token: pages send the browser to sign in; the API answers 401.
    r = httpx.get(f"{base}/ui/events", follow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login")
    assert httpx.get(f"{base}/ui/api/stream?view=overview").status_code == 401
    body = {"type": "order.placed", "data": "{}"}
    assert httpx.post(f"{base}/ui/api/publish", json=body).status_code == 401
    assert (
        httpx.post(f"{base}/ui/api/publish", json=body, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    # A signed-in cookie without the CSRF value (or with a wrong one) changes nothing.
    cookies = {c["name"]: c["value"] for c in tab.page.context.cookies()}
    [cookie] = [c for c in tab.page.context.cookies() if c["name"] == "evroute_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    count = query(world.db, "SELECT count(*) FROM events")[0][0]
    assert httpx.post(f"{base}/ui/api/publish", json=body, cookies=cookies).status_code == 403
    bad = {"X-CSRF-Token": "0" * 64}
    assert httpx.post(f"{base}/ui/api/publish", json=body, cookies=cookies, headers=bad).status_code == 403
    assert query(world.db, "SELECT count(*) FROM events")[0][0] == count
    # The page's own form carries the CSRF value and works.
    page = tab.page
    page.goto(f"{base}/ui/send")
    page.fill("input[name=type]", "order.placed")
    page.fill("textarea[name=data]", '{"from": "the send form"}')
    page.click("#send button[type=submit]")
    page.wait_for_url(f"{base}/ui/events/*")
    assert "the send form" in page.locator("pre.data").inner_text()
    assert tab.errors == []


def test_the_route_page_tests_an_event_previews_a_reset_and_pauses(tab: Tab, world: World) -> None:
    page = tab.page
    page.goto(f"{world.base}/ui/routes/ok")
    test_form = page.locator("form[data-action$='/test']")
    test_form.locator("textarea").fill('{"type": "order.cancelled", "source": "/shop"}')
    test_form.locator("button[type=submit]").click()
    expect = "does not match: filter type: expected 'order.placed', got 'order.cancelled'"
    page.wait_for_function(
        "t => document.querySelector(\"form[data-action$='/test'] .result\").textContent === t", arg=expect
    )
    reset = page.locator("form[data-action$='/reset']")
    reset.locator("input[name=to]").fill("earliest")
    reset.locator("button.preview").click()
    page.wait_for_function(
        "() => /cursor would move to 0; \\d+ event\\(s\\) after it/.test("
        "document.querySelector(\"form[data-action$='/reset'] .result\").textContent)"
    )
    page.click("form[data-action$='/pause'] button")
    page.wait_for_selector("form[data-action$='/resume'] button", timeout=5000)
    assert "paused: true" in (world.folder / "routes.yaml").read_text()
    page.click("form[data-action$='/resume'] button")
    page.wait_for_selector("form[data-action$='/pause'] button", timeout=5000)
    assert "paused: true" not in (world.folder / "routes.yaml").read_text()
    assert tab.errors == []
