"""Signed session cookies and the CSRF tokens bound to them.

Signing in trades the bearer token for a session: the cookie holds the user id, role, the
token's expiry and a random nonce, signed with HMAC-SHA256 under a key derived from the JWT
secret, so nothing is stored on the server and the bearer token itself never reaches the
browser's storage. The CSRF token of a session is an HMAC of its nonce (synchronizer token
without server state): a page embeds it, every state-changing request sends it back, and a
forged cross-site request cannot know it. Before signing in, the login form is protected the
same way by a short-lived nonce cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudphone.domain import Principal, Role

SESSION_COOKIE = "cloudphone_session"
"""Name of the session cookie (HttpOnly, SameSite=Strict, path ``/ui``)."""
LOGIN_COOKIE = "cloudphone_login"
"""Name of the sign-in form's nonce cookie."""
CSRF_FIELD = "csrf_token"
"""Form field carrying the CSRF token."""
CSRF_HEADER = "X-CSRF-Token"
"""Header carrying the CSRF token (htmx requests)."""


@dataclass(frozen=True)
class Session:
    """A signed-in operator.

    Attributes:
        user_id: Who signed in.
        role: Their role, from the token.
        expires_at: When the token (and so the session) expires.
        nonce: Random per sign-in; the CSRF token derives from it.
    """

    user_id: str
    role: Role
    expires_at: datetime
    nonce: str

    @property
    def principal(self) -> Principal:
        """The caller, for the use cases."""
        return Principal(self.user_id, self.role)

    @property
    def is_admin(self) -> bool:
        """True for admins."""
        return self.role is Role.ADMIN


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens.

    Args:
        secret: The platform's JWT secret; a separate key is derived from it, so a cookie can
            never pass for a bearer token or the other way round.
    """

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"cloudphone-console-session", "sha256").digest()

    def issue(self, principal: Principal, expires_at: datetime) -> tuple[Session, str]:
        """A new session for ``principal`` and its cookie value."""
        session = Session(principal.user_id, principal.role, expires_at, secrets.token_hex(16))
        payload = json.dumps(
            {
                "u": session.user_id,
                "r": session.role.value,
                "e": int(expires_at.timestamp()),
                "n": session.nonce,
            },
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return session, f"{body}.{self._mac(body)}"

    def load(self, cookie: str | None, now: datetime | None = None) -> Session | None:
        """The session a cookie stands for, or None when missing, forged, bad or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            raw = json.loads(_unb64(body))
            expires = datetime.fromtimestamp(int(raw["e"]), UTC)
            session = Session(str(raw["u"]), Role(raw["r"]), expires, str(raw["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= (now or datetime.now(UTC)):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of ``session``."""
        return self._mac(f"csrf|{session.nonce}")

    def login_token(self, nonce: str) -> str:
        """The CSRF token of a sign-in form whose nonce cookie holds ``nonce``."""
        return self._mac(f"login|{nonce}")

    @staticmethod
    def same(sent: str | None, expected: str) -> bool:
        """Constant-time comparison of a token a request sent with the expected one."""
        return bool(sent) and hmac.compare_digest(str(sent), expected)

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
