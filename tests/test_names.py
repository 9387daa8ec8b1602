"""Names are checked whole: a trailing newline (which a regex `$` lets through) is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from evroute.errors import InvalidInput, RoutesInvalid
from evroute.publish import check_broker
from evroute.routes.load import load_routes_text


def test_broker_names_with_a_trailing_newline_are_refused() -> None:
    assert check_broker("order-broker") == "order-broker"
    with pytest.raises(InvalidInput):
        check_broker("order-broker\n")


@pytest.mark.parametrize(
    "route",
    [
        '{name: "inventory\\n", subscriber: "http://127.0.0.1:1/"}',
        '{name: inventory, broker: "shop\\n", subscriber: "http://127.0.0.1:1/"}',
        '{name: inventory, filter: {"type\\n": x}, subscriber: "http://127.0.0.1:1/"}',
        '{name: inventory, headers: {"X-Key\\n": v}, subscriber: "http://127.0.0.1:1/"}',
    ],
)
def test_routes_file_names_with_a_trailing_newline_are_problems(tmp_path: Path, route: str) -> None:
    with pytest.raises(RoutesInvalid) as caught:
        load_routes_text(f"routes:\n  - {route}\n", str(tmp_path / "routes.yaml"))
    assert len(caught.value.problems) == 1
