"""Writes one shipping label line per paid order (a command subscriber for evroute).

evroute runs it with the event as structured CloudEvent JSON on stdin and CE_ID, CE_SOURCE,
CE_TYPE, EVROUTE_ROUTE, EVROUTE_ATTEMPT, … in the environment. Labels are appended to the file
named by $LABELS_FILE (default: labels.txt in the current folder, which evroute sets to the
routes file's folder).

Exit status is the contract with evroute:
  0   the label is written (or was already written: deliveries are at least once);
  65  EX_DATAERR, the order has no usable address: evroute dead-letters it without retrying;
  75  EX_TEMPFAIL, the label file cannot be written right now: evroute retries.

Standard library only, so any python3 runs it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EX_DATAERR = 65
EX_TEMPFAIL = 75


def label_for(event: object) -> tuple[str, str]:
    """(event id, label line), or ValueError naming what the order lacks."""
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise ValueError("the event's data is not a JSON object")
    data = event["data"]
    ship_to = data.get("ship_to")
    if not isinstance(ship_to, dict) or not ship_to.get("name") or not ship_to.get("address"):
        raise ValueError(f"order {data.get('order')!r} has no ship_to name and address")
    event_id = str(event.get("id"))
    return event_id, f"{data.get('order')}\t{ship_to['name']}\t{ship_to['address']}\t{event_id}"


def main() -> int:
    try:
        event_id, line = label_for(json.load(sys.stdin))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        print(f"label: {exc}", file=sys.stderr)
        return EX_DATAERR
    labels = Path(os.environ.get("LABELS_FILE", "labels.txt"))
    try:
        done = labels.read_text(encoding="utf-8").splitlines() if labels.exists() else []
        # A redelivery (after a crash, or a replay) must not print a second label.
        if any(old.endswith(f"\t{event_id}") for old in done):
            return 0
        with labels.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        print(f"label: cannot write {labels}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
