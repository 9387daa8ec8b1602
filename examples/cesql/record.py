"""Appends ``id<TAB>type<TAB>subject`` of the event on stdin to the file named by argv[1].

A command subscriber for the CESQL example (standard library only). evroute runs it in the
routes file's folder, so a relative path lands next to routes.yaml.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: record.py FILE  (the event JSON on stdin)", file=sys.stderr)
        return 64  # EX_USAGE: a wrong routes.yaml will not get better by retrying
    try:
        event = json.load(sys.stdin)
    except ValueError as exc:
        print(f"record: stdin is not JSON: {exc}", file=sys.stderr)
        return 65
    with open(sys.argv[1], "a", encoding="utf-8") as fh:
        fh.write(f"{event.get('id')}\t{event.get('type')}\t{event.get('subject')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
