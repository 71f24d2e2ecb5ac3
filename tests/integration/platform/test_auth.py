"""Bearer tokens: issue, verify, and the verifier's cache never outlives a token."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from cloudphone.api import auth
from cloudphone.api.auth import (
    InvalidTokenError,
    TokenExpiredError,
    TokenVerifier,
    issue_token,
    verify_token,
)
from cloudphone.domain import Principal, Role

SECRET = "s" * 48


def test_a_token_carries_its_user_and_role() -> None:
    """What token create issues, verify returns."""
    token = issue_token(SECRET, "kim", Role.ADMIN, ttl=timedelta(minutes=5))
    assert verify_token(SECRET, token) == Principal("kim", Role.ADMIN)


def test_tokens_cannot_be_issued_for_nobody_or_for_no_time() -> None:
    """Empty or oversized user ids and non-positive lifetimes are refused."""
    with pytest.raises(ValueError, match="user id"):
        issue_token(SECRET, "", Role.USER, ttl=timedelta(minutes=5))
    with pytest.raises(ValueError, match="user id"):
        issue_token(SECRET, "u" * 201, Role.USER, ttl=timedelta(minutes=5))
    with pytest.raises(ValueError, match="ttl"):
        issue_token(SECRET, "kim", Role.USER, ttl=timedelta(0))


def test_the_verifier_cache_expires_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached token is checked again (signature and exp) once its exp has passed."""
    decoded: list[str] = []
    real = auth._decode

    def counting(secret: str, token: str, issuer: str) -> tuple[Principal, float]:
        decoded.append(token)
        return real(secret, token, issuer)

    monkeypatch.setattr(auth, "_decode", counting)
    verifier = TokenVerifier(SECRET)
    token = issue_token(SECRET, "kim", Role.USER, ttl=timedelta(seconds=60))
    assert verifier.verify(token) == Principal("kim")
    assert verifier.verify(token) == Principal("kim")
    assert len(decoded) == 1
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.verify(token)
    assert len(decoded) == 2


def test_an_expired_token_is_refused() -> None:
    """A token whose exp has passed is refused as expired."""
    issued = datetime.now(UTC) - timedelta(hours=1)
    token = issue_token(SECRET, "kim", Role.USER, ttl=timedelta(minutes=5), now=issued)
    with pytest.raises(TokenExpiredError):
        TokenVerifier(SECRET).verify(token)


def test_the_verifier_never_caches_a_bad_token() -> None:
    """A forged token fails every time; the cache stays bounded."""
    verifier = TokenVerifier(SECRET, cache_size=2)
    forged = issue_token("other-" + SECRET, "kim", Role.ADMIN, ttl=timedelta(minutes=5))
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            verifier.verify(forged)
    for user in ("a", "b", "c"):
        verifier.verify(issue_token(SECRET, user, Role.USER, ttl=timedelta(minutes=5)))
    assert len(verifier._cache) == 2
