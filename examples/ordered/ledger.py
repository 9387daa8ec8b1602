"""A shop ledger for the ordered-route example: books order events, refuses them out of order.

    python3 ledger.py --port 8090 --book ledger.tsv --flaky 3

It accepts CloudEvents in binary mode (POST, ``ce-*`` headers, JSON body with ``order`` and
``shop``). Each order must go ``order.placed`` → ``order.paid`` → ``order.shipped``; an event
that arrives before its predecessor is refused with 422 (evroute dead-letters it: a ledger cannot
book a payment for an order it has never seen). Booked events are appended to ``--book`` as
``shop<TAB>order<TAB>type<TAB>id``. ``--flaky N`` answers 503 to the first attempt of every Nth
event, so the example shows retries that do not break the order. A redelivered event (same id)
is answered 200 and not booked twice.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEQUENCE = ("order.placed", "order.paid", "order.shipped")


class Ledger:
    def __init__(self, book: str, flaky: int) -> None:
        self.book = book
        self.flaky = flaky
        self.lock = threading.Lock()
        self.stage: dict[tuple[str, str], int] = {}  # (shop, order) -> index of the last booked type
        self.booked: set[str] = set()
        self.offered: list[str] = []  # ids in the order first seen, for --flaky

    def take(self, event_id: str, event_type: str, data: dict[str, object]) -> tuple[int, str]:
        shop, order = str(data.get("shop")), str(data.get("order"))
        with self.lock:
            if event_id in self.booked:
                return 200, "already booked"
            if event_id not in self.offered:
                self.offered.append(event_id)
                if self.flaky and len(self.offered) % self.flaky == 0:
                    return 503, "ledger busy, try again"
            if event_type not in SEQUENCE:
                return 422, f"unknown type {event_type}"
            want = self.stage.get((shop, order), -1) + 1
            got = SEQUENCE.index(event_type)
            if got != want:
                expected = SEQUENCE[want] if want < len(SEQUENCE) else "nothing more"
                return 422, f"{shop} order {order}: got {event_type}, expected {expected}"
            self.stage[(shop, order)] = got
            self.booked.add(event_id)
            with open(self.book, "a", encoding="utf-8") as fh:
                fh.write(f"{shop}\t{order}\t{event_type}\t{event_id}\n")
            return 200, "booked"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--book", default="ledger.tsv", help="file the booked events are appended to")
    parser.add_argument("--flaky", type=int, default=0, help="answer 503 once to every Nth event")
    args = parser.parse_args()
    ledger = Ledger(args.book, args.flaky)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = None
            if not isinstance(data, dict) or "ce-id" not in self.headers:
                status, text = 400, "expected a binary-mode CloudEvent with a JSON object body"
            else:
                status, text = ledger.take(self.headers["ce-id"], self.headers.get("ce-type", ""), data)
            print(f"ledger: {self.headers.get('ce-id')} -> {status} {text}", file=sys.stderr, flush=True)
            payload = json.dumps({"result": text}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # health check: 200 once listening
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # one line per event is enough
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"ledger listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
