"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec version 1.0.0).

A signed request carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``.
The key is the secret after its ``whsec_`` prefix, base64-decoded.

The secret is decoded exactly as the reference libraries do (prefix optional, padding
optional, characters outside the base64 alphabet skipped), so a receiver that verifies with
any of them accepts what evroute signs, whatever the secret looks like.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from evroute.errors import InvalidInput

PREFIX = "whsec_"
VERSION = "v1"
TOLERANCE = 300  # seconds either side of now that verify() accepts, as the reference libraries do

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret; InvalidInput when it is empty or not base64."""
    text = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        # "==" makes unpadded base64 decode; surplus padding is ignored (reference behaviour).
        key = base64.b64decode(text + "==")
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "signing secret is not valid base64 (expected whsec_ followed by base64, e.g. from "
            "`openssl rand -base64 32`)"
        ) from None
    if not key:
        raise InvalidInput("signing secret is empty (expected whsec_ followed by base64)")
    return key


def _to_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, content, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    mac = _digest(decode_secret(secret), msg_id, int(timestamp), _to_bytes(body))
    return f"{VERSION},{base64.b64encode(mac).decode('ascii')}"


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
    """The three Standard Webhooks headers for one request."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    msg_id: str | None,
    timestamp: int | str | None,
    body: bytes | str,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """True when one ``v1`` entry of the space-separated ``signature`` matches.

    Missing parts, a non-numeric timestamp or one more than ``tolerance`` seconds away from
    ``now`` (default: the current time) all fail; entries of other versions are skipped.
    """
    key = decode_secret(secret)
    if not msg_id or timestamp is None or not signature:
        return False
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    expected = _digest(key, msg_id, stamp, _to_bytes(body))
    for entry in signature.split(" "):
        version, _, value = entry.partition(",")
        if version != VERSION or not value:
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, candidate):
            return True
    return False


__all__ = [
    "ID_HEADER",
    "PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE",
    "decode_secret",
    "sign",
    "signature_headers",
    "verify",
]
