"""The ledger of the EventTransform example: records every event it is sent.

    python3 ledger.py --port 8081 --log ledger.jsonl

Each binary-mode CloudEvent POSTed to it becomes one JSON line in ``--log``: the path it came
to, its ``ce-*`` attributes (without the prefix) and its JSON data. It answers 204.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="append one JSON line per event to this file")
    args = parser.parse_args()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            attributes = {k[3:].lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = body.decode("utf-8", "replace")
            line = {"path": self.path, **attributes, "data": data}
            with lock, open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            print(
                f"ledger: {self.path} {attributes.get('type')} {attributes.get('id')}",
                file=sys.stderr,
                flush=True,
            )
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # health check: 200 once listening
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"ledger listening on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
