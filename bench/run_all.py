"""Every performance figure of SPEC sections 9 and 15 in one table, each against its reference
measured in the same run. Run it with an interpreter that has evroute as `pip install .` gives
it (uvloop comes with it) plus `redis` for the relay references (the bench extra).

    make bench          # or: python bench/run_all.py
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import table

SCRIPTS = [
    "publish",
    "deliver",
    "fanout",
    "latency",
    "footprint",
    "ingress",
    "filters",
    "status",
    "console",
    "tracing",
]


def main() -> None:
    rows = []
    for name in SCRIPTS:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as exc:
            print(f"bench/{name}.py: not run ({exc})", file=sys.stderr)
            continue
        if not hasattr(module, "run"):
            continue
        started = time.time()
        print(f"running bench/{name}.py …", file=sys.stderr, flush=True)
        rows.extend(module.run())
        print(f"  done in {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
