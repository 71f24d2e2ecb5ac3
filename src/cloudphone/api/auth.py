"""Bearer tokens: HS256 JWTs carrying a user id (``sub``) and a role.

``cloudphone token create`` issues them with :func:`issue_token`; every route but the probes
(``/healthz``, ``/readyz``) requires one (see :mod:`cloudphone.api.deps`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import jwt

from cloudphone.api.errors import AuthenticationError
from cloudphone.domain import Principal, Role

ALGORITHM = "HS256"
MAX_USER_ID = 200
"""Longest user id (the width of ``saga_runs.started_by``)."""


class TokenExpiredError(AuthenticationError):
    """The token's ``exp`` has passed (HTTP 401)."""

    code = "token_expired"


class InvalidTokenError(AuthenticationError):
    """The token is malformed, forged, or lacks a required claim (HTTP 401)."""

    code = "invalid_token"


def issue_token(
    secret: str,
    user_id: str,
    role: Role,
    *,
    ttl: timedelta,
    issuer: str = "cloudphone",
    now: datetime | None = None,
) -> str:
    """A signed token for ``user_id`` acting as ``role``, valid for ``ttl``.

    Raises:
        ValueError: The user id is empty or too long, or the ttl is not positive.
    """
    if not _valid_user_id(user_id):
        raise ValueError(f"user id must be 1-{MAX_USER_ID} characters, without NUL")
    if ttl <= timedelta(0):
        raise ValueError("token ttl must be positive")
    issued = now or datetime.now(UTC)
    claims = {
        "sub": user_id,
        "role": role.value,
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, *, issuer: str = "cloudphone") -> Principal:
    """The principal a token stands for.

    Raises:
        TokenExpiredError: The token has expired.
        InvalidTokenError: Bad signature, wrong issuer, malformed, or missing claims.
    """
    return _decode(secret, token, issuer)[0]


class TokenVerifier:
    """Verifies tokens, remembering the ones it already checked until they expire.

    A client sends the same token with every request; checking its HMAC each time costs more
    than the rest of a small request. The cache is keyed by the whole token (signature
    included) and bounded.

    Args:
        secret: The HS256 secret.
        issuer: Required ``iss`` claim.
        cache_size: Tokens remembered at most (least recently used go first).
    """

    def __init__(self, secret: str, *, issuer: str = "cloudphone", cache_size: int = 4096) -> None:
        self._secret = secret
        self._issuer = issuer
        self._size = cache_size
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        """Like :func:`verify_token`, from the cache when this token was verified before."""
        return self._lookup(token)[0]

    def verify_until(self, token: str) -> tuple[Principal, datetime]:
        """The principal and when the token expires (the console's session ends then too).

        Raises:
            TokenExpiredError: The token has expired.
            InvalidTokenError: Bad signature, wrong issuer, malformed, or missing claims.
        """
        principal, expires = self._lookup(token)
        return principal, datetime.fromtimestamp(expires, UTC)

    def _lookup(self, token: str) -> tuple[Principal, float]:
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit[1]:
                self._cache.move_to_end(token)
                return hit
            del self._cache[token]
        found = _decode(self._secret, token, self._issuer)
        self._cache[token] = found
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return found


def _decode(secret: str, token: str, issuer: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpiredError("the bearer token has expired") from None
    except jwt.PyJWTError as error:
        raise InvalidTokenError(f"invalid bearer token: {error}") from None
    user_id, role = claims.get("sub"), claims.get("role", Role.USER.value)
    if not isinstance(user_id, str) or not _valid_user_id(user_id):
        raise InvalidTokenError("invalid bearer token: bad subject")
    try:
        return Principal(user_id=user_id, role=Role(role)), float(claims["exp"])
    except (ValueError, TypeError):
        raise InvalidTokenError(f"invalid bearer token: unknown role {role!r}") from None


def _valid_user_id(user_id: str) -> bool:
    # Stored in text columns, which on PostgreSQL cannot hold NUL.
    return 1 <= len(user_id) <= MAX_USER_ID and "\x00" not in user_id
