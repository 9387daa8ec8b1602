"""Operating a real worker: a subscriber goes down, its events are dead-lettered, it comes
back, `dlq replay --route` delivers them; `status` and `events show` tell the truth at each
step, compared with what the receivers saw."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from helpers import evroute_argv, evroute_env
from helpers import wait_until as wait

from receiver import Receiver, Reply


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.base = evroute_argv(tmp_path)
        self.env = evroute_env()
        self.cwd = tmp_path

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, cwd=self.cwd
        )
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def json(self, *args: str):  # type: ignore[no-untyped-def]
        return json.loads(self(*args, "--json"))

    def worker(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*self.base, "worker", "-q"], env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip


def test_outage_dead_letters_then_replay_and_status_and_trace_agree(tmp_path: Path) -> None:
    down = {"on": True}
    inventory = Receiver().start()
    payment = Receiver(lambda r: Reply(503, b"payment provider down") if down["on"] else Reply(200)).start()
    (tmp_path / "routes.yaml").write_text(
        "routes:\n"
        f"  - {{name: inventory, filter: {{type: order.placed}}, subscriber: '{inventory.url}/'}}\n"
        f"  - name: payment\n    filter: {{type: order.placed}}\n    subscriber: '{payment.url}/'\n"
        "    delivery: {retry: 2, backoffDelay: 50ms}\n"
    )
    cli = Cli(tmp_path)
    cli("routes", "check")  # creates the cursors: events published from now on are delivered
    worker = cli.worker()
    try:
        for n in range(10):
            cli(
                "publish",
                "--type",
                "order.placed",
                "--source",
                "/shop",
                "--id",
                f"o-{n}",
                "--data",
                f'{{"n": {n}}}',
            )
        cli("publish", "--type", "order.cancelled", "--source", "/shop", "--id", "c-1")
        wait(lambda: len(cli.json("dlq", "list", "--route", "payment")) == 10)
        inventory.wait_for(lambda reqs: len(reqs) == 10)

        # Counters reach the database with the next batched commit (<= 100 ms later).
        wait(lambda: {r["name"]: r for r in cli.json("status")["routes"]}["payment"]["failed"] == 30)
        status = {r["name"]: r for r in cli.json("status")["routes"]}
        assert cli.json("status")["worker"]["state"] == "running"
        assert status["inventory"]["delivered"] == 10 and status["inventory"]["dead_letters"] == 0
        assert status["payment"]["dead_letters"] == 10 and status["payment"]["delivered"] == 0
        assert status["payment"]["failed"] == 30  # 3 attempts each, as the receiver saw
        assert len(payment.requests) == 30
        assert "HTTP 503" in (status["payment"]["last_error"] or "")

        trace = {r["route"]: r for r in cli.json("events", "show", "o-3")["routes"]}
        assert trace["inventory"]["state"] == "delivered"
        assert trace["payment"]["state"] == "dead" and trace["payment"]["dlq_id"] is not None
        cancelled = {r["route"]: r for r in cli.json("events", "show", "c-1")["routes"]}
        assert cancelled["payment"]["state"] == "filtered"
        assert "order.placed" in cancelled["payment"]["failed_filter"]

        [letter] = [d for d in cli.json("dlq", "list", "--route", "payment") if d["event"]["id"] == "o-3"]
        assert (letter["attempts"], letter["status"], letter["reason"]) == (3, 503, "retries exhausted")
        assert letter["body"] == "payment provider down"

        down["on"] = False
        cli("dlq", "replay", "--route", "payment")
        wait(lambda: cli.json("dlq", "list", "--route", "payment") == [])
        assert {r.ce_id for r in payment.requests if r.at} >= {f"o-{n}" for n in range(10)}
        assert [r.headers["evroute-attempt"] for r in payment.requests if r.ce_id == "o-3"][-1] == "1"
        trace = {r["route"]: r for r in cli.json("events", "show", "o-3")["routes"]}
        assert trace["payment"]["state"] == "delivered"
        wait(lambda: {r["name"]: r for r in cli.json("status")["routes"]}["payment"]["delivered"] == 10)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        inventory.stop()
        payment.stop()
    assert worker.returncode == 0
