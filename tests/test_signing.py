"""Standard Webhooks signing: every upstream vector, and agreement with the reference library."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from evroute.delivery import signing
from evroute.errors import InvalidInput

standardwebhooks = pytest.importorskip(
    "standardwebhooks", reason="the standardwebhooks library is not installed"
)

ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "standard-webhooks" / "vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    if not ANCHOR.exists():
        pytest.skip(f"Standard Webhooks vectors not found at {ANCHOR}")
    data: dict[str, Any] = json.loads(ANCHOR.read_text())
    return data


def test_every_sign_vector(vectors: dict[str, Any]) -> None:
    assert len(vectors["sign_vectors"]) >= 2
    for v in vectors["sign_vectors"]:
        msg_id, ts, payload = v["msg_id"], v["timestamp"], v["payload"]
        assert f"{msg_id}.{ts}.{payload}" == v["signed_content"]
        assert signing.sign(v["secret"], msg_id, ts, payload.encode()) == v["expected_signature"], v["name"]
        assert signing.sign(v["secret"], msg_id, ts, payload) == v["expected_signature"]
        assert signing.verify(v["secret"], msg_id, ts, payload.encode(), v["expected_signature"], now=ts)
        assert signing.verify(v["secret"], msg_id, str(ts), payload, v["expected_signature"], now=ts + 299)
        # The reference library computes the same signature.
        lib = standardwebhooks.Webhook(v["secret"])
        when = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
        assert lib.sign(msg_id, when, payload) == v["expected_signature"]


def test_tampered_signature_does_not_verify(vectors: dict[str, Any]) -> None:
    bad = vectors["negative_vectors"][0]
    assert not signing.verify(
        bad["secret"],
        bad["msg_id"],
        bad["timestamp"],
        bad["payload"],
        bad["signature_header"],
        now=bad["timestamp"],
    )


def test_empty_secret_is_rejected(vectors: dict[str, Any]) -> None:
    empty = next(v for v in vectors["negative_vectors"] if v.get("secret") == "whsec_")
    with pytest.raises(InvalidInput, match="signing secret is empty"):
        signing.sign(empty["secret"], "msg", 1, b"{}")
    with pytest.raises(InvalidInput, match="signing secret is empty"):
        signing.verify(empty["secret"], "msg", 1, b"{}", "v1,AAAA", now=1)
    with pytest.raises(standardwebhooks.webhooks.EmptyWebhookSecretError):
        standardwebhooks.Webhook(empty["secret"])


def test_bare_version_does_not_verify(vectors: dict[str, Any]) -> None:
    bare = next(v for v in vectors["negative_vectors"] if v.get("signature_header") == "v1,")
    good = vectors["sign_vectors"][0]
    args = (good["secret"], good["msg_id"], good["timestamp"], good["payload"])
    assert not signing.verify(*args, bare["signature_header"], now=good["timestamp"])


def test_valid_signature_amid_decoys(vectors: dict[str, Any]) -> None:
    multi = vectors["multi_signature_example"]
    good = vectors["sign_vectors"][0]
    args = (good["secret"], good["msg_id"], good["timestamp"], good["payload"])
    header = multi["join_with"].join(
        [*multi["decoys_before"], good["expected_signature"], *multi["decoys_after"]]
    )
    assert signing.verify(*args, header, now=good["timestamp"])
    decoys_only = multi["join_with"].join([*multi["decoys_before"], *multi["decoys_after"]])
    assert not signing.verify(*args, decoys_only, now=good["timestamp"])
    # A matching signature under another version label is skipped, not accepted.
    relabelled = good["expected_signature"].replace("v1,", "v2,")
    assert not signing.verify(*args, relabelled, now=good["timestamp"])


def test_timestamp_tolerance_and_malformed_headers(vectors: dict[str, Any]) -> None:
    v = vectors["sign_vectors"][0]
    secret, msg_id, ts, payload, sig = (
        v["secret"],
        v["msg_id"],
        v["timestamp"],
        v["payload"],
        v["expected_signature"],
    )
    assert signing.verify(secret, msg_id, ts, payload, sig, now=ts + 300)
    assert signing.verify(secret, msg_id, ts, payload, sig, now=ts - 300)
    assert not signing.verify(secret, msg_id, ts, payload, sig, now=ts + 301)  # too old
    assert not signing.verify(secret, msg_id, ts, payload, sig, now=ts - 301)  # too new
    assert not signing.verify(secret, msg_id, "soon", payload, sig, now=ts)
    assert not signing.verify(secret, msg_id, None, payload, sig, now=ts)
    assert not signing.verify(secret, None, ts, payload, sig, now=ts)
    assert not signing.verify(secret, msg_id, ts, payload, None, now=ts)
    assert not signing.verify(secret, msg_id, ts, payload, "garbage", now=ts)
    assert not signing.verify(secret, msg_id, ts, payload, "v1,not base64!", now=ts)
    assert not signing.verify(secret, msg_id, ts, payload + " ", sig, now=ts)  # body changed
    assert not signing.verify(secret, msg_id + "x", ts, payload, sig, now=ts)


def test_headers_verify_with_the_reference_library() -> None:
    rng = random.Random(7)
    for n in range(40):
        raw = os.urandom(rng.choice([8, 24, 32, 64]))
        encoded = base64.b64encode(raw).decode()
        # Prefixed, unprefixed and unpadded secrets decode as the reference library decodes them.
        secret = [f"whsec_{encoded}", encoded, "whsec_" + encoded.rstrip("=")][n % 3]
        body = json.dumps({"n": n, "text": 'café "quoted" 100% ✓', "r": rng.random()}).encode()
        now = int(time.time())
        headers = signing.signature_headers(secret, f"msg_{n}", now, body)
        assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert headers["webhook-timestamp"] == str(now)
        assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)
        assert signing.verify(secret, f"msg_{n}", now, body, headers["webhook-signature"])


def test_signature_is_over_the_exact_bytes() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    a = signing.sign(secret, "id", 10, b'{"a":1}')
    b = signing.sign(secret, "id", 10, b'{"a": 1}')
    assert a != b and a.startswith("v1,") and len(base64.b64decode(a[3:])) == 32


def test_secret_that_is_not_base64_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="not valid base64"):
        signing.decode_secret("whsec_abcde")  # 5 characters cannot be base64
    with pytest.raises(InvalidInput, match="not valid base64"):
        signing.decode_secret("whsec_ключ")
