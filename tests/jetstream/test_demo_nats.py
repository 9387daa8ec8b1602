"""`make demo-nats`: the order fan-out on a real nats-server with two workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_demo_nats_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    for var in ("EVROUTE_DB", "EVROUTE_ROUTES", "EVROUTE_STORE"):
        env.pop(var, None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo_nats.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert "inventory received 100 orders, payment 100" in out
    assert "workers: 2 running" in out
    made = [int(line.split()[2]) for line in out.splitlines() if line.startswith("worker-")]
    assert len(made) == 2 and sum(made) == 200 and all(made), out  # both workers delivered
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("evroute-demo-nats-")]
    assert (folder / "nats" / "jetstream").is_dir()
