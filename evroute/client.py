"""Publishing to a running ingress over HTTP (``evroute publish --url``).

Synchronous httpx: the CLI sends one request and exits, so an event loop would only add
start-up time. One event goes in binary content mode, exactly as a producer using the
CloudEvents SDK would send it; several go as one ``application/cloudevents-batch+json``
request, which the ingress stores all or nothing, the same promise as ``publish --file``.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from evroute.cloudevent import BATCH_CT, CloudEvent, dumps_many, to_binary
from evroute.errors import InvalidInput, RuntimeFault


def send(
    url: str, events: Sequence[CloudEvent], *, token: str | None = None, timeout: float = 30.0
) -> tuple[int, int]:
    """POST ``events`` to the ingress at ``url``; return ``(stored, duplicates)``.

    A refusal of the events (4xx) is InvalidInput carrying the ingress's own message; an
    ingress that cannot be reached or fails (5xx) is RuntimeFault naming the URL.
    """
    if not events:
        return 0, 0
    if len(events) == 1:
        headers, body = to_binary(events[0])
    else:
        headers, body = {"Content-Type": BATCH_CT}, dumps_many(events)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise InvalidInput(f"--url {url!r} is not a usable http(s) URL ({exc})") from None
    except httpx.TimeoutException:
        raise RuntimeFault(f"the ingress at {url} did not answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise RuntimeFault(
            f"cannot reach the ingress at {url}: {exc or type(exc).__name__} (is `evroute worker --listen` running?)"
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        return _counts(url, response)
    message = _message(response)
    if status == 401:
        fix = (
            "the token given was refused; check --token / EVROUTE_TOKEN"
            if token
            else "pass the worker's token with --token or EVROUTE_TOKEN"
        )
        raise InvalidInput(f"the ingress at {url} requires a token (401): {fix}")
    if 400 <= status < 500:
        raise InvalidInput(
            f"the ingress at {url} refused the event{'s' if len(events) > 1 else ''} ({status}): {message}"
        )
    raise RuntimeFault(f"the ingress at {url} failed ({status}): {message}")


def _counts(url: str, response: httpx.Response) -> tuple[int, int]:
    try:
        answer = response.json()
        stored, duplicates = answer["stored"], answer["duplicates"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeFault(
            f"the ingress at {url} answered {response.status_code} without the stored/duplicates counts "
            "(is this URL an evroute ingress?)"
        ) from None
    if not isinstance(stored, int) or not isinstance(duplicates, int):
        raise RuntimeFault(f"the ingress at {url} answered counts that are not integers: {answer!r}")
    return stored, duplicates


def _message(response: httpx.Response) -> str:
    """The ingress's ``{"error": …}`` text, or the start of whatever else came back."""
    try:
        answer = response.json()
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            return str(answer["error"])
    except ValueError:
        pass
    text = response.text.strip().replace("\n", " ")
    return text[:200] if text else response.reason_phrase or "no message"


__all__ = ["send"]
