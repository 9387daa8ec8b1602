"""Security (SPEC 5.1, 5.2, 6, 6.1, 7.1), against real ``evroute worker`` processes:

- command subscribers never see event data in argv or through a shell;
- secrets expanded from ``${VAR}`` (headers, signing secret, URIs) and the ingress token appear
  in no log line, no status, no listing, no export: ``***`` stands where a value would be;
- the ingress binds loopback unless told otherwise and enforces its token;
- Standard Webhooks signatures made by a real worker verify with the ``standardwebhooks``
  library and with :func:`evroute.delivery.signing.verify`.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import evroute, free_port, progress, stop, wait_until
from helpers import evroute_env as env_with

from evroute.cloudevent import from_http, to_json
from evroute.delivery import signing
from evroute.store import Store
from evroute.store import log as event_log

from receiver import Receiver, Reply, Request

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

SECRET_TOKEN = "tok-Secret-4711-abcdef"
URI_KEY = "uri-Key-0815-zyxwvu"
WH_KEY = base64.b64encode(b"evroute-signing-key-for-tests-32b").decode()
WH_SECRET = f"whsec_{WH_KEY}"
INGRESS_TOKEN = "ingress-Token-9876-qwerty"
LITERAL = "literal-Header-2468-mnbvcx"  # written into routes.yaml as it is, no ${VAR}
SECRETS = (SECRET_TOKEN, URI_KEY, WH_SECRET, WH_KEY, INGRESS_TOKEN, LITERAL)
ALLOWED = "allowed-Value-1357"

DUMP_ENV = """\
import json, os, sys
sys.stdin.buffer.read()
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
"""


def cli(folder: Path, *args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str]:
    """Run ``evroute`` as a process; exit status and stdout + stderr together."""
    proc = evroute(
        folder, *args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = proc.communicate(stdin, timeout=60)
    return proc.returncode, out.decode(errors="replace")


def settled(db: Path, routes: list[str]) -> bool:
    last, position, retrying = progress(db)
    return bool(last) and all(
        position.get(r, -1) >= last.get("default", 0) and r not in retrying for r in routes
    )


def dls_tried(db: Path) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT dls_outcome FROM dead_letters WHERE route = 'down'").fetchone()
    finally:
        conn.close()
    return row is not None and row[0] is not None


def ingress_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    def up() -> bool:
        assert proc.poll() is None, "the worker exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 20, "ingress up")


# --------------------------------------------------------------------------- no shell, exact bytes

# Shell syntax in every attribute: if anything ran it through a shell, a PWNED file would appear.
HOSTILE = "$(touch PWNED1) `touch PWNED2`; touch PWNED3 && touch PWNED4 | x > PWNED5 'q\" \\ * ~ %s\t\u00e9"

HANDLER = """\
import json, os, sys
out = sys.argv[1]
n = os.getpid()  # deliveries run side by side: one file name per process
data = sys.stdin.buffer.read()
open(os.path.join(out, f"{n}.stdin"), "wb").write(data)
env = {k: os.environ.get(k) for k in ("CE_ID", "CE_SOURCE", "CE_TYPE", "CE_SUBJECT", "EVROUTE_ROUTE")}
json.dump({"env": env, "argv": sys.argv[1:]}, open(os.path.join(out, f"{n}.json"), "w"))
sys.exit(int(os.environ.get("HANDLER_EXIT", "0")) if os.environ.get("EVROUTE_ROUTE") == "fails" else 0)
"""


def test_command_subscribers_never_run_event_data_through_a_shell(tmp_path: Path) -> None:
    for name in ("direct", "string-form", "fails", "dls"):
        (tmp_path / name).mkdir()
    (tmp_path / "handler.py").write_text(HANDLER)
    http = Receiver().start()
    try:
        (tmp_path / "routes.yaml").write_text(
            "routes:\n"
            f"  - name: direct\n    subscriber: {{command: [{PY}, handler.py, direct]}}\n"
            # the string form is split with shlex, never handed to a shell either
            f"  - name: string-form\n    subscriber: {{command: '{PY} handler.py string-form'}}\n"
            f"  - name: fails\n    subscriber: {{command: [{PY}, handler.py, fails]}}\n"
            f"    delivery: {{retry: 0, deadLetterSink: {{command: [{PY}, handler.py, dls]}}}}\n"
            f"  - name: http\n    subscriber: '{http.url}/'\n"
        )
        env = env_with(HANDLER_EXIT="3")
        ids = [HOSTILE, HOSTILE + " 2"]
        data = json.dumps({"note": HOSTILE, "nested": [HOSTILE]})
        code, out = cli(
            tmp_path,
            "publish",
            "--id",
            ids[0],
            "--source",
            HOSTILE,
            "--type",
            HOSTILE,
            "--subject",
            HOSTILE,
            "--ext",
            f"tenant={HOSTILE}",
            "--data",
            data,
            env=env,
        )
        assert code == 0, out
        line = {
            "specversion": "1.0",
            "id": ids[1],
            "source": HOSTILE,
            "type": HOSTILE,
            "subject": HOSTILE,
            "tenant": HOSTILE,
            "datacontenttype": "text/plain",
            "data": HOSTILE,
        }
        code, out = cli(tmp_path, "publish", "--file", "-", env=env, stdin=json.dumps(line).encode())
        assert code == 0, out
        code, out = cli(tmp_path, "worker", "--drain", "-v", env=env)
        assert code == 0, out
        with Store(str(tmp_path / "ev.db")) as store:
            stored = event_log.read_after(store, "default", 0)
        assert [s.event.id for s in stored] == ids
        for route in ("direct", "string-form", "fails", "dls"):
            got = sorted((tmp_path / route).glob("*.stdin"))
            assert len(got) == 2, route
            by_id = {}
            for path in got:
                meta = json.loads(path.with_suffix(".json").read_text())
                by_id[meta["env"]["CE_ID"]] = (path.read_bytes(), meta)
            assert set(by_id) == set(ids), route
            for s in stored:
                raw, meta = by_id[s.event.id]
                sent = json.loads(raw)
                if route == "dls":  # the dead-letter sink gets the event plus Knative's error extensions
                    assert str(sent.pop("knativeerrorcode")) == "3"
                    assert sent.pop("knativeerrordest").endswith("handler.py fails")
                    sent.pop("knativeerrordata", None)
                    assert sent == json.loads(to_json(s.event))
                else:
                    assert raw == to_json(s.event), route  # the exact bytes, nothing reinterpreted
                assert meta["argv"] == [route], route  # no event data in argv
                assert meta["env"]["CE_SOURCE"] == HOSTILE and meta["env"]["CE_TYPE"] == HOSTILE
                assert meta["env"]["CE_SUBJECT"] == HOSTILE
            assert json.loads(by_id[ids[0]][0])["data"] == json.loads(data)
            assert json.loads(by_id[ids[1]][0])["data"] == HOSTILE
        # over HTTP (binary mode) every attribute arrives exact after percent-decoding
        assert len(http.requests) == 2
        received = {e.id: e for r in http.requests for e in from_http(r.headers, r.body)}
        for s in stored:
            assert received[s.event.id].attributes == {**s.event.attributes}
            assert received[s.event.id].data == s.event.data
    finally:
        http.stop()
    for folder in (tmp_path, ROOT, Path.cwd()):
        assert not list(folder.glob("PWNED*")), folder


# --------------------------------------------------------------------------- secrets, token, signatures


def _signed_behaviour() -> Callable[[Request], Reply]:
    seen: set[str] = set()

    def answer(req: Request) -> Reply:
        key = req.path + req.ce_id + req.headers.get("webhook-id", "")
        if key not in seen:  # every event fails once: the retry is signed afresh
            seen.add(key)
            return Reply(503)
        return Reply(200)

    return answer


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker with secrets in headers, a signing secret, URIs and its ingress token, driven
    through success, retries, a redirect, dead letters and a failed dead-letter sink; then every
    command that prints routes or failures."""
    folder = tmp_path_factory.mktemp("secrets")
    signed = Receiver(_signed_behaviour()).start()
    # A subscriber that echoes what it was sent: the secret comes back in a Location header and a body.
    redirect = Receiver(
        lambda r: Reply(
            307,
            body=f"wrong place, you sent {r.headers.get('authorization')}".encode(),
            headers={"Location": f"{signed.url}/moved?key={URI_KEY}&auth={r.headers.get('x-api-key')}"},
        )
    ).start()
    down = Receiver(lambda r: Reply(503, body=f"down; key {r.headers.get('x-api-key')}".encode())).start()
    (folder / "routes.yaml").write_text(
        "defaults:\n  delivery: {retry: 2, backoffDelay: 50ms}\n"
        "routes:\n"
        "  - name: signed-binary\n"
        f"    subscriber: '{signed.url}/binary?key=${{URI_KEY}}'\n"
        "    headers: {Authorization: 'Bearer ${SECRET_TOKEN}', X-Api-Key: '${SECRET_TOKEN}'}\n"
        "    signing: {secret: '${WH_SECRET}'}\n"
        "  - name: signed-json\n"
        f"    subscriber: '{signed.url}/json?key=${{URI_KEY}}'\n"
        "    headers: {Authorization: 'Bearer ${SECRET_TOKEN}'}\n"
        "    signing: {secret: '${WH_SECRET}'}\n"
        "    delivery: {format: json}\n"
        "  - name: redirected\n"
        f"    subscriber: '{redirect.url}/r?key=${{URI_KEY}}'\n"
        "    headers: {Authorization: 'Bearer ${SECRET_TOKEN}', X-Api-Key: '${SECRET_TOKEN}'}\n"
        "  - name: down\n"
        f"    subscriber: '{down.url}/d?key=${{URI_KEY}}'\n"
        f"    headers: {{X-Api-Key: '${{SECRET_TOKEN}}', X-Literal: '{LITERAL}'}}\n"
        "    delivery: {retry: 1, deadLetterSink: {uri: 'http://127.0.0.1:9/dls?key=${URI_KEY}'}}\n"
        # commands see neither the ingress token nor what the other routes expand
        "  - name: envdump\n"
        f"    subscriber: {{command: [{PY}, dump_env.py, envdump.json]}}\n"
        "  - name: allowlisted\n"
        f"    subscriber: {{command: [{PY}, dump_env.py, allowlisted.json]}}\n"
        "    env: [ALLOWED_VAR, SECRET_TOKEN]\n"
    )
    (folder / "dump_env.py").write_text(DUMP_ENV)
    env = env_with(
        SECRET_TOKEN=SECRET_TOKEN,
        URI_KEY=URI_KEY,
        WH_SECRET=WH_SECRET,
        ALLOWED_VAR=ALLOWED,
        EVROUTE_TOKEN=INGRESS_TOKEN,  # the token from the environment, never on a command line
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "worker.log").open("wb")
    proc = evroute(folder, "worker", "-v", "--listen", f"127.0.0.1:{port}", env=env, stderr=log)
    out: dict[str, Any] = {"signed": signed, "outputs": {}}
    outputs: dict[str, str] = out["outputs"]
    try:
        ingress_up(port, proc)
        event = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/shop", "ce-type": "order.placed"}
        body = b'{"order": 1}'
        ct = {"Content-Type": "application/json"}
        out["no_token"] = httpx.post(url, headers={**event, **ct}, content=body).status_code
        out["wrong_token"] = httpx.post(
            url, headers={**event, **ct, "Authorization": "Bearer nope"}, content=body
        ).status_code
        out["metrics_no_token"] = httpx.get(f"{url}/metrics").status_code
        out["healthz_no_token"] = httpx.get(f"{url}/healthz").status_code
        auth = {"Authorization": f"Bearer {INGRESS_TOKEN}"}
        out["with_token"] = httpx.post(url, headers={**event, **ct, **auth}, content=body).status_code
        metrics = httpx.get(f"{url}/metrics", headers=auth)
        outputs["metrics"] = metrics.text
        code, text = cli(
            folder, "publish", "--url", url + "/", "--id", "e-2", "--type", "t",
            "--data", '{"order": 2}', env=env,
        )  # fmt: skip
        assert code == 0, text
        outputs["publish --url"] = text
        routes = ["signed-binary", "signed-json", "redirected", "down", "envdump", "allowlisted"]
        wait_until(lambda: settled(folder / "ev.db", routes), 30, "every route settled")
        wait_until(lambda: dls_tried(folder / "ev.db"), 30, "the dead-letter sink was tried")
        for name, args in {
            "status (worker running)": ("status",),
            "status --json (worker running)": ("status", "--json"),
        }.items():
            code, text = cli(folder, *args, env=env)
            assert code == 0, text
            outputs[name] = text
        out["worker_alive"] = proc.poll() is None
    finally:
        out["exit"] = stop(proc)
        log.close()
        redirect.stop()
        down.stop()
        signed.stop()
    outputs["worker log (-v)"] = (folder / "worker.log").read_text()
    for name, args in {
        "status": ("status",),
        "status --json": ("status", "--json"),
        "routes check": ("routes", "check"),
        "routes check --json": ("routes", "check", "--json"),
        "subscribe list": ("subscribe", "list"),
        "subscribe list --json": ("subscribe", "list", "--json"),
        "dlq list": ("dlq", "list"),
        "dlq list --json": ("dlq", "list", "--json"),
        "events show --json": ("events", "show", "e-1", "--json"),
        "export knative": ("export", "knative"),
        "export dapr": ("export", "dapr"),
    }.items():
        code, text = cli(folder, *args, env=env)
        assert code == 0, f"{name}: {text}"
        outputs[name] = text
    letters = json.loads(outputs["dlq list --json"])
    for letter in letters:
        code, text = cli(folder, "dlq", "show", str(letter["id"]), env=env)
        assert code == 0, text
        outputs[f"dlq show {letter['id']} ({letter['route']})"] = text
    out["letters"] = {d["route"]: d for d in letters}
    out["envs"] = {n: json.loads((folder / f"{n}.json").read_text()) for n in ("envdump", "allowlisted")}
    yield out


def test_secrets_appear_nowhere(secret_run: dict[str, Any]) -> None:
    outputs: dict[str, str] = secret_run["outputs"]
    assert secret_run["worker_alive"] and secret_run["exit"] == 0
    for name, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} printed by {name}:\n{text}"
    # *** stands where each value would be
    must_mask = [
        "worker log (-v)",
        "status",
        "status --json",
        "status --json (worker running)",
        "routes check",
        "routes check --json",
        "subscribe list",
        "subscribe list --json",
        "dlq list --json",
        "events show --json",
        "export knative",
        "export dapr",
    ]
    must_mask += [name for name in outputs if name.startswith("dlq show") and "(redirected)" in name]
    for name in must_mask:
        assert "***" in outputs[name], f"no *** in {name}:\n{outputs[name]}"
    routes = {r["name"]: r for r in json.loads(outputs["subscribe list --json"])}
    # every header value is masked, whatever it holds
    assert routes["signed-binary"]["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert routes["down"]["headers"] == {"X-Api-Key": "***", "X-Literal": "***"}
    assert routes["allowlisted"]["env"] == ["ALLOWED_VAR", "SECRET_TOKEN"]
    assert routes["signed-binary"]["signing"] == {"secret": "***"}
    assert routes["down"]["delivery"]["deadLetterSink"]["uri"].endswith("?key=***")
    # Failures whose texts and bodies carried a secret: the subscribers echoed what they were sent.
    letters = secret_run["letters"]
    assert "key=***&auth=***" in letters["redirected"]["error"], letters["redirected"]
    assert letters["redirected"]["body"] == "wrong place, you sent ***"  # the whole header value
    assert letters["down"]["body"] == "down; key ***"
    assert letters["down"]["dls_outcome"].startswith("failed")
    log = outputs["worker log (-v)"]
    assert "dead-lettered" in log and "failed: HTTP 503" in log and "not forwarded" in log


def test_ingress_token_is_required(secret_run: dict[str, Any]) -> None:
    assert secret_run["no_token"] == 401
    assert secret_run["wrong_token"] == 401
    assert secret_run["metrics_no_token"] == 401
    assert secret_run["healthz_no_token"] == 200
    assert secret_run["with_token"] == 202
    assert "evroute_" in secret_run["outputs"]["metrics"]


def test_signatures_from_a_real_worker_verify(secret_run: dict[str, Any]) -> None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    requests = [r for r in secret_run["signed"].requests if r.path in ("/binary", "/json")]
    # 2 events x 2 routes x (a refused first attempt + its retry)
    assert len(requests) == 8, [(r.path, r.ce_id) for r in requests]
    hook = Webhook(WH_SECRET)
    for req in requests:
        headers = req.headers
        assert headers["authorization"] == f"Bearer {SECRET_TOKEN}"
        assert headers["webhook-signature"].startswith("v1,")
        event_id = headers["ce-id"] if req.path == "/binary" else json.loads(req.body)["id"]
        assert headers["webhook-id"] == event_id
        assert hook.verify(req.body, headers) == json.loads(req.body)
        assert signing.verify(
            WH_SECRET,
            headers["webhook-id"],
            int(headers["webhook-timestamp"]),
            req.body,
            headers["webhook-signature"],
        )
        with pytest.raises(WebhookVerificationError):
            hook.verify(req.body + b" ", headers)
        assert not signing.verify(
            WH_SECRET,
            headers["webhook-id"],
            int(headers["webhook-timestamp"]),
            req.body + b" ",
            headers["webhook-signature"],
        )


# --------------------------------------------------------------------------- ingress binds loopback


def _other_addresses() -> list[str]:
    """IPv4 addresses of this machine other than loopback."""
    found: set[str] = set()
    hostname_cmd = shutil.which("hostname")
    if hostname_cmd:
        try:
            text = subprocess.run([hostname_cmd, "-I"], capture_output=True, text=True, timeout=5).stdout
            found.update(a for a in text.split() if "." in a)
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        found.update(i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def _listening(port: int) -> list[str]:
    """Local addresses with a listening TCP socket on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if len(address) == 8:
                    found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                    found.append(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def test_ingress_binds_loopback_by_default_and_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes: []\n")
    port = free_port()
    env = env_with(EVROUTE_TOKEN=INGRESS_TOKEN)
    log = (tmp_path / "worker.log").open("wb")
    proc = evroute(tmp_path, "worker", "--listen", f":{port}", env=env, stderr=log)
    try:
        ingress_up(port, proc)
        assert _listening(port) == ["127.0.0.1"]
        for address in _other_addresses():
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((address, port)) != 0, f"the ingress answers on {address}"
        url = f"http://127.0.0.1:{port}/"
        headers = {"ce-specversion": "1.0", "ce-id": "t-1", "ce-source": "/s", "ce-type": "t"}
        assert httpx.post(url, headers=headers).status_code == 401
        assert httpx.post(url, headers={**headers, "Authorization": "Bearer x"}).status_code == 401
        assert (
            httpx.post(url, headers={**headers, "Authorization": f"Bearer {INGRESS_TOKEN}"}).status_code
            == 202
        )
    finally:
        code = stop(proc)
        log.close()
    text = (tmp_path / "worker.log").read_text()
    assert code == 0, text
    assert f"http://127.0.0.1:{port}/ (token required)" in text
    assert INGRESS_TOKEN not in text


def test_command_subscribers_get_no_ingress_token_and_no_other_routes_secrets(
    secret_run: dict[str, Any],
) -> None:
    plain = secret_run["envs"]["envdump"]
    for secret in SECRETS:
        assert secret not in json.dumps(plain), secret
    for name in ("EVROUTE_TOKEN", "SECRET_TOKEN", "URI_KEY", "WH_SECRET"):
        assert name not in plain
    # everything else of the worker's environment is inherited, and the event's variables added
    assert plain["PYTHONPATH"] == str(ROOT) and plain["ALLOWED_VAR"] == ALLOWED
    assert plain["EVROUTE_ROUTE"] == "envdump" and plain["CE_ID"] in ("e-1", "e-2")


def test_an_env_allowlist_passes_only_the_names_it_lists(secret_run: dict[str, Any]) -> None:
    got = secret_run["envs"]["allowlisted"]
    got.pop("LC_CTYPE", None)  # set by the Python child itself under a C locale (PEP 538)
    assert sorted(got) == sorted(
        [
            "ALLOWED_VAR",
            "SECRET_TOKEN",
            "CE_ID",
            "CE_SOURCE",
            "CE_TYPE",
            "EVROUTE_ROUTE",
            "EVROUTE_ATTEMPT",
            "EVROUTE_BROKER",
            "TRACEPARENT",  # the attempt's trace context, like the CE_* variables
        ]
        + (["CE_TIME"] if "CE_TIME" in got else [])
    )
    # a name listed is passed even when a route expands it: the route asked for it
    assert (got["ALLOWED_VAR"], got["SECRET_TOKEN"]) == (ALLOWED, SECRET_TOKEN)
