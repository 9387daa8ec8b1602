"""Who may use the console: the token, the sign-in cookie and the CSRF check.

- The token (``--token`` / ``$EVROUTE_TOKEN``; a random one printed at start when none is
  set, as Jupyter does) gates every page and API. A script may send it as
  ``Authorization: Bearer <token>`` on every request.
- A browser signs in once (``/ui/login``) and gets a session cookie: HttpOnly (no script can
  read it), SameSite=Strict (no other site's page can make the browser send it), Path=/ui.
  The cookie is an HMAC of a random per-process secret, so it is worth nothing once the
  process stops and never contains the token.
- Every state-changing request (any method but GET/HEAD) made with the cookie must carry the
  session's CSRF value in ``X-CSRF-Token`` (or a ``csrf`` form field) and, when the browser
  sends one, an ``Origin`` equal to the console's own. A Bearer request needs neither: a
  browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "evroute_console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


class Gate:
    def __init__(self, token: str | None) -> None:
        self.generated = not token
        self.token = token or secrets.token_urlsafe(24)
        self._secret = secrets.token_bytes(32)

    def _mac(self, purpose: str, value: str = "") -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode())

    def new_session(self) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._mac('session', nonce)}"

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        nonce, _, mac = cookie.partition(".")
        return hmac.compare_digest(mac, self._mac("session", nonce))

    def csrf_for(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_for(cookie))

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given.strip())


__all__ = ["COOKIE", "CSRF_HEADER", "SAFE_METHODS", "Gate"]
