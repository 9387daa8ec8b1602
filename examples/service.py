"""A tiny order-processing service for the examples: inventory, payment or notification.

It accepts CloudEvents over HTTP (binary or structured mode), logs one line per order and
answers 200. ``--fail-for SECONDS`` makes it answer 503 for that long after it starts (a
payment provider outage); ``POST /control`` with ``{"fail": true|false}`` switches it by hand.

    python examples/service.py --name payment --port 8082 --fail-for 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-for", type=float, default=0.0, help="answer 503 for this many seconds")
    parser.add_argument("--log", help="append one line per received event to this file: its path and id")
    args = parser.parse_args()
    state = {"fail_until": time.time() + args.fail_for, "forced": None, "seen": 0}

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("ce-id")
        if event_id is None and body:
            try:
                event_id = json.loads(body).get("id")
            except ValueError:
                event_id = None
        failing = state["forced"] if state["forced"] is not None else time.time() < state["fail_until"]
        if failing:
            return web.json_response({"error": f"{args.name} unavailable"}, status=503)
        state["seen"] += 1
        if args.log:
            with open(args.log, "a") as fh:
                fh.write(f"{request.path} {event_id}\n")
        return web.Response(status=200)

    async def control(request: web.Request) -> web.Response:
        state["forced"] = bool((await request.json()).get("fail"))
        return web.json_response({"fail": state["forced"]})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"name": args.name, "seen": state["seen"]})

    app = web.Application()
    app.router.add_post("/control", control)
    app.router.add_get("/healthz", health)
    app.router.add_post("/{tail:.*}", receive)
    print(f"{args.name} listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
