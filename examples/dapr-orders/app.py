"""A Dapr-style subscriber app for the dapr-orders example (inventory or payment).

Dapr delivers structured CloudEvents (``application/cloudevents+json``) and reads the app's
answer: ``{"status": "SUCCESS"}``, ``"RETRY"`` or ``"DROP"``. This app logs one line per
event it accepts (``PATH ID``); with ``--drop-invalid`` it answers DROP for an order with a
negative amount (it can never succeed), and RETRY for the first ``--retry-first`` deliveries (a
busy moment).

    python examples/dapr-orders/app.py --port 6001 --log inventory.log --drop-invalid
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="append PATH ID for every accepted event")
    parser.add_argument("--retry-first", type=int, default=0, help="answer RETRY to this many deliveries")
    parser.add_argument("--drop-invalid", action="store_true", help="answer DROP for a negative amount")
    args = parser.parse_args()
    state = {"retry_left": args.retry_first}

    async def receive(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        data = event.get("data") or {}
        amount = data.get("amount") if isinstance(data, dict) else None
        if args.drop_invalid and isinstance(amount, int | float) and amount < 0:
            return web.json_response({"status": "DROP"})
        if state["retry_left"] > 0:
            state["retry_left"] -= 1
            return web.json_response({"status": "RETRY"})
        with open(args.log, "a") as fh:
            fh.write(f"{request.path} {event['id']}\n")
        return web.json_response({"status": "SUCCESS"})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
