"""The top-level routes.yaml example is the file `evroute init` writes, and it loads."""

from __future__ import annotations

from pathlib import Path

from evroute.routes.load import load_routes

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_example_is_the_init_template_and_loads() -> None:
    example = ROOT / "routes.yaml"
    assert example.read_bytes() == (ROOT / "evroute" / "templates" / "routes.yaml").read_bytes()
    routeset = load_routes(str(example))
    assert {r.name for r in routeset.routes} >= {"inventory", "payment"}
