"""``evroute routes apply`` on both stores: checked, compare-and-set, positions made at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evroute.cli import main
from evroute.errors import InvalidInput
from evroute.routes.apply import apply_routes
from evroute.store.opener import open_store, parse

ROUTES = """\
routes:
  - name: inv
    subscriber: http://127.0.0.1:9/inv
    headers: {Authorization: "Bearer ${NOT_SET_HERE}"}
  - name: pay
    subscriber: http://127.0.0.1:9/pay
    delivery: {ordering: ordered}
"""


def cli(*argv: str) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture(params=["sqlite", "nats"])
def url(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'ev.db'}"
    return request.getfixturevalue("nats_server").url


def test_apply_checks_writes_and_makes_positions(url: str, tmp_path: Path) -> None:
    source, target = tmp_path / "new.yaml", tmp_path / "routes.yaml"
    source.write_text(ROUTES)
    code, out, err = cli("--store", url, "--routes", str(target), "routes", "apply", str(source))
    assert code == 0, err
    assert "applied: 2 routes" in out and "new routes (position set now): inv, pay" in out
    code, out, _ = cli("--store", url, "--routes", str(target), "routes", "apply", str(source))
    assert code == 0 and out.startswith("unchanged: 2 routes")
    with open_store(parse(url)) as store:
        assert store.routes(str(target)).text == ROUTES
        assert set(store.cursors()) == {"inv", "pay"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - name: x\n    subscriber: ftp://nope\n")
    code, _, err = cli("--store", url, "--routes", str(target), "routes", "apply", str(bad))
    assert (
        code == 2 and f"{bad}:3:17: route 'x': subscriber: 'ftp://nope' is not an absolute http(s) URI" in err
    )
    with open_store(parse(url)) as store:
        assert store.routes(str(target)).text == ROUTES  # nothing written


def test_a_concurrent_edit_is_refused_never_lost(nats_server, tmp_path: Path) -> None:
    with open_store(parse(nats_server.url)) as store:
        apply_routes(store, ROUTES, "a.yaml", "routes.yaml")
        seen = store.routes("routes.yaml")
        store.put_routes("routes.yaml", ROUTES + "# someone else\n", seen.revision)
        with pytest.raises(InvalidInput, match="changed meanwhile"):
            store.put_routes("routes.yaml", ROUTES + "# mine\n", seen.revision)
        assert store.routes("routes.yaml").text.endswith("# someone else\n")
        info = store._run(lambda js: js.consumer_info("EVROUTE_DEFAULT", "evroute-pay"))
        assert info.config.max_ack_pending == 1  # ordered, from the applied routes


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "--type", "t"],
        ["status"],
        ["dlq", "list"],
        ["events", "list"],
        ["routes", "apply"],
        ["worker", "--once"],
    ],
)
def test_an_unreachable_server_is_one_error_line_exit_1(
    command: list[str], tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from natsserver import free_port

    monkeypatch.chdir(tmp_path)
    (tmp_path / "routes.yaml").write_text(ROUTES)
    url = f"nats://127.0.0.1:{free_port()}"
    code, _, err = cli("--store", url, *command)
    assert code == 1, (command, err)
    assert err.startswith(f"Error: cannot reach NATS at {url}") and err.count("\n") == 1, err


def test_status_and_dlq_on_a_cluster_read_the_routes_in_kv(nats_server, tmp_path: Path) -> None:
    """A host without the routes file (or with an old one) sees the cluster's routes."""
    source, here = tmp_path / "new.yaml", tmp_path / "elsewhere.yaml"
    source.write_text(ROUTES)
    url = nats_server.url
    code, _, err = cli(
        "--store", url, "--routes", str(tmp_path / "routes.yaml"), "routes", "apply", str(source)
    )
    assert code == 0, err
    code, out, err = cli("--store", url, "--routes", str(here), "status", "--json")
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert [r["name"] for r in doc["routes"]] == ["inv", "pay"]
    assert doc["routes"][0]["subscriber"] == "http://127.0.0.1:9/inv"
    assert doc["workers"] == []
    code, out, err = cli("--store", url, "--routes", str(here), "dlq", "replay", "--all")
    assert code == 0 and "not in the routes file" not in out + err, out + err
