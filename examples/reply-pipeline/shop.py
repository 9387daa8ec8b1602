"""The services of the reply-pipeline example.

    python3 shop.py inventory --port 8081              # answers order.placed with a reply event
    python3 shop.py payment --port 8082 --log payments.jsonl

``inventory`` reserves stock for each ``order.placed`` (data ``{"order", "sku", "quantity"}``) and
answers 200 with a binary-mode CloudEvent: ``order.reserved`` when there is stock, else
``order.backordered``. The reply's id is derived from the order event's id, so a redelivered
order yields the same reply and evroute stores it once.

``payment`` charges each event it is sent: it appends one JSON line per event (id, type, source,
subject, ``evroutehops`` and data) to ``--log`` and answers 204.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STOCK = {"SKU-1": 10, "SKU-2": 3, "SKU-3": 0}


class Shop:
    def __init__(self, role: str, log: str | None) -> None:
        self.role = role
        self.log = log
        self.lock = threading.Lock()
        self.stock = dict(STOCK)
        self.reserved: dict[str, str] = {}  # order event id -> reply type, for redeliveries

    def inventory(self, headers: Any, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        order_id = headers["ce-id"]
        sku, quantity = str(data.get("sku")), int(data.get("quantity", 1))
        with self.lock:
            reply_type = self.reserved.get(order_id)
            if reply_type is None:
                if self.stock.get(sku, 0) >= quantity:
                    self.stock[sku] -= quantity
                    reply_type = "order.reserved"
                else:
                    reply_type = "order.backordered"
                self.reserved[order_id] = reply_type
        reply = {
            "ce-specversion": "1.0",
            "ce-id": f"{order_id}-{reply_type.split('.')[1]}",
            "ce-source": "/inventory",
            "ce-type": reply_type,
            "Content-Type": "application/json",
        }
        if "ce-subject" in headers:
            reply["ce-subject"] = headers["ce-subject"]
        return 200, reply, json.dumps({**data, "reserved": reply_type == "order.reserved"}).encode()

    def payment(self, headers: Any, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        line = {
            "id": headers["ce-id"],
            "type": headers.get("ce-type"),
            "source": headers.get("ce-source"),
            "subject": headers.get("ce-subject"),
            "evroutehops": headers.get("ce-evroutehops"),
            "data": data,
        }
        if self.log:
            with self.lock, open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        return 204, {}, b""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=("inventory", "payment"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", help="payment: append one JSON line per event to this file")
    args = parser.parse_args()
    shop = Shop(args.role, args.log)
    handle = shop.inventory if args.role == "inventory" else shop.payment

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = None
            if not isinstance(data, dict) or "ce-id" not in self.headers:
                status, headers = 400, {"Content-Type": "text/plain"}
                payload = b"expected a binary-mode CloudEvent with a JSON object body"
            else:
                status, headers, payload = handle(self.headers, data)
            answer = f"{status} {headers['ce-type']}" if "ce-type" in headers else str(status)
            print(f"{args.role}: {self.headers.get('ce-id')} -> {answer}", file=sys.stderr, flush=True)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
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
    print(f"{args.role} listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
