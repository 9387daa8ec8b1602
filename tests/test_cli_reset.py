"""`subscribe reset`: a seq past the end is refused; scheduled retries are kept unless
`--drop-retries` says otherwise."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from evroute.cli import main
from evroute.cloudevent import make_event
from evroute.store import Store, cursors, retries
from evroute.store import log as event_log
from evroute.store.retries import Retry

ROUTES = """\
routes:
  - name: inventory
    subscriber: http://127.0.0.1:8081/
"""


def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    routes = tmp_path / "routes.yaml"
    if not routes.exists():
        routes.write_text(ROUTES)
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--db", str(tmp_path / "ev.db"), "--routes", str(routes), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


def setup(tmp_path: Path) -> None:
    assert cli(tmp_path, "routes", "check")[0] == 0
    with Store(str(tmp_path / "ev.db")) as store:
        event_log.append(store, "default", [make_event(type="t", id=f"e{i}") for i in range(5)])
        retries.schedule(
            store,
            [Retry("inventory", s, 1, 0.0, None, 503, "x", None) for s in (2, 3)]
            + [Retry("inventory", -7, 0, 0.0, None, None, None, 7)],  # a dead-letter replay
        )


def position(tmp_path: Path) -> int:
    with Store(str(tmp_path / "ev.db")) as store:
        return cursors.get(store, "inventory").position  # type: ignore[union-attr]


def scheduled(tmp_path: Path) -> list[int]:
    with Store(str(tmp_path / "ev.db")) as store:
        return sorted(r.seq for r in retries.due(store, 1e12, ["inventory"], limit=100))


def test_a_seq_past_the_end_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    setup(tmp_path)
    assert cli(tmp_path, "subscribe", "reset", "inventory", "--to", "earliest")[0] == 0
    code, out, err = cli(tmp_path, "subscribe", "reset", "inventory", "--to", "9")
    assert (code, out) == (2, "")
    assert (
        err
        == "Error: --to 9 is past the end of the log (the last seq is 5; use --to latest to skip everything)\n"
    )
    assert position(tmp_path) == 0
    # The seq right after the end is the next event published: allowed, same as latest.
    assert cli(tmp_path, "subscribe", "reset", "inventory", "--to", "6")[0] == 0
    assert position(tmp_path) == 5


def test_reset_keeps_scheduled_retries_unless_told_to_drop_them(tmp_path: Path) -> None:
    setup(tmp_path)
    code, out, _ = cli(tmp_path, "subscribe", "reset", "inventory", "--to", "latest")
    assert code == 0 and "2 scheduled retries kept (--drop-retries drops them)" in out
    assert scheduled(tmp_path) == [-7, 2, 3]
    code, out, _ = cli(tmp_path, "subscribe", "reset", "inventory", "--to", "latest", "--drop-retries")
    assert code == 0 and "2 scheduled retries dropped" in out
    # A dead-letter replay is the user's own request: it stays.
    assert scheduled(tmp_path) == [-7]
