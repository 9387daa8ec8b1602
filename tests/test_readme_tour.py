"""The README's five-minute tour, run as written: every command of it, in order, in one shell,
in an empty folder, with `evroute` installed as a user installs it. Two adaptations only: the
ingress port is a free one instead of 8080 (other programs may hold 8080), and after a command
sent to the background the script waits for it to answer, as a reader typing the next line does."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Five-minute tour\n\n```sh\n(.*?)```", text, re.S)
    assert block is not None, "the README has no five-minute tour"
    return block.group(1).replace("\\\n", " ").splitlines()


def test_the_five_minute_tour_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    script = ["set -euo pipefail"]
    for line in tour_lines():
        line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        if not line.strip():
            continue
        script.append(f"echo {shlex.quote('$ ' + line.split('  #')[0].strip())} >&2")
        script.append(line)
        if line.split("#")[0].rstrip().endswith("&"):
            script.append(
                f"""{sys.executable} -c 'import time, urllib.request
for _ in range(400):
    try:
        urllib.request.urlopen("http://127.0.0.1:{port}/healthz", timeout=1); break
    except OSError: time.sleep(0.05)
'"""
            )
    script.append("wait")  # the worker's own exit status: 0 after SIGTERM
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROUTE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Error:" not in log, log
    assert "added route audit" in log
    for name in ("inventory", "payment", "audit"):
        assert name in done.stdout
    assert (tmp_path / "knative.yaml").read_text().count("kind: Trigger") == 3
    assert "kind: Subscription" in (tmp_path / "dapr.yaml").read_text()
    assert not re.search(r"--token", "\n".join(tour_lines())), "the token belongs in the environment"
