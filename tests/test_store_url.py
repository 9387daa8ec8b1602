"""Choosing the store: --store URL, --db PATH, $EVROUTE_STORE, $EVROUTE_DB, ./evroute.db."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evroute.cli import main
from evroute.errors import InvalidInput
from evroute.store import Store
from evroute.store import log as event_log
from evroute.store.opener import choose, parse

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner(env=env)
    with runner.isolation(env=env) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue().decode(), err.getvalue().decode()


def stored(db: Path) -> list[str]:
    with Store(str(db), create=False) as s:
        return [e.event.id for e in event_log.read_after(s, "default", 0)]


def test_parse_sqlite_forms() -> None:
    assert parse("sqlite:///abs/path.db").path == "/abs/path.db"
    assert parse("sqlite:rel/ev.db").path == "rel/ev.db"
    assert parse("SQLite:ev.db").kind == "sqlite"
    nats = parse("nats://a:4222,b:4223")
    assert (nats.kind, nats.servers) == ("nats", ("a:4222", "b:4223"))
    assert parse("tls://n1:4222").kind == "nats"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://x", "unknown store scheme 'redis:'"),
        ("ev.db", "unknown store 'ev.db'"),
        ("sqlite:", "no database file"),
        ("sqlite://host/ev.db", "three slashes"),
        ("nats://", "nats://HOST:PORT"),
    ],
)
def test_parse_refuses_bad_urls(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse(url)


def test_precedence_flags_beat_the_environment() -> None:
    env = {"EVROUTE_STORE": "sqlite:env-store.db", "EVROUTE_DB": "env-db.db"}
    assert choose(None, "flag.db", env).path == "flag.db"
    assert choose("sqlite:flag-store.db", None, env).path == "flag-store.db"
    assert choose(None, None, env).path == "env-store.db"
    assert choose(None, None, {"EVROUTE_DB": "env-db.db"}).path == "env-db.db"
    assert choose(None, None, {}).path == "evroute.db"
    with pytest.raises(InvalidInput, match="--store and --db"):
        choose("sqlite:a.db", "b.db", {})


def test_cli_store_url_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "abs.db"
    code, _, err = run("--store", f"sqlite://{absolute}", "publish", "--type", "t", "--id", "a1")
    assert (code, err) == (0, ""), err
    assert stored(absolute) == ["a1"]
    code, _, err = run("--store", "sqlite:rel.db", "publish", "--type", "t", "--id", "r1")
    assert (code, err) == (0, ""), err
    assert stored(tmp_path / "rel.db") == ["r1"]


def test_cli_environment_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"EVROUTE_STORE": f"sqlite:{tmp_path / 'from-env.db'}", "EVROUTE_DB": str(tmp_path / "old.db")}
    assert run("publish", "--type", "t", "--id", "e1", env=env)[0] == 0
    assert stored(tmp_path / "from-env.db") == ["e1"]
    assert not (tmp_path / "old.db").exists()
    # --db on the command line beats $EVROUTE_STORE
    assert run("--db", str(tmp_path / "flag.db"), "publish", "--type", "t", "--id", "f1", env=env)[0] == 0
    assert stored(tmp_path / "flag.db") == ["f1"]
    # without $EVROUTE_STORE, $EVROUTE_DB still names the file, as before
    assert run("publish", "--type", "t", "--id", "d1", env={"EVROUTE_DB": str(tmp_path / "old.db")})[0] == 0
    assert stored(tmp_path / "old.db") == ["d1"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--store", "sqlite:a.db", "--db", "b.db"], "--store and --db"),
        (["--store", "mysql://x/y"], "unknown store scheme 'mysql:'"),
    ],
)
def test_cli_store_usage_errors_are_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(*args, "publish", "--type", "t")
    assert code == 2
    assert err.startswith("Error: ") and says in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


def test_cli_nats_url_is_recognised_and_refused_while_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import evroute.store.nats  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the NATS store is present: tested with its own server")
    monkeypatch.chdir(tmp_path)
    commands = (
        ["publish", "--type", "t"],
        ["status"],
        ["dlq", "list"],
        ["subscribe", "reset", "a", "--to", "latest"],
        ["worker", "--once"],
        ["init"],
    )
    for command in commands:
        code, _, err = run("--store", "nats://127.0.0.1:4222", *command)
        assert code == 2, (command, err)
        assert err.startswith("Error: ") and "NATS" in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


def test_nats_options_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(
        "--nats-token", "s3cret", "--nats-creds", "x.creds", "--db", "ev.db", "publish", "--type", "t"
    )
    assert (code, err) == (0, "")
    code, _, err = run(
        "--db", "ev.db", "publish", "--type", "t", env={"NATS_TOKEN": "s3cret", "NATS_CREDS": "x"}
    )
    assert (code, err) == (0, "")


def test_cli_start_path_imports_no_nats(tmp_path: Path) -> None:
    """Neither importing the CLI nor a whole single publish loads any NATS code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys\n"
        "from evroute.cli import main\n"
        "try:\n"
        f"    main(['--db', {str(tmp_path / 'ev.db')!r}, 'publish', '--type', 't'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith(('nats.', 'evroute.store.nats'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_single_publish_loads_no_dataclasses_and_no_url_parsing(tmp_path: Path) -> None:
    """What a publish process does not need stays out of its start-up: the dataclasses module
    (and defining dataclasses) and urllib.parse, for a publish to an existing database (as
    every publish but the first is)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys\n"
        "for name in ('dataclasses', 'urllib.parse'):  # an editable install's finder loads some at start\n"
        "    sys.modules.pop(name, None)\n"
        "before = set(sys.modules)\n"
        "from evroute.cli import main\n"
        "try:\n"
        f"    main(['--db', {str(tmp_path / 'ev.db')!r}, 'publish', '--type', 't'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('dataclasses', 'urllib.parse') if m in set(sys.modules) - before))\n"
    )
    for _ in range(2):  # the first one creates the database (migrations may load more)
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
        )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "evroute", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout == f"evroute, version {version('evroute')}\n"
