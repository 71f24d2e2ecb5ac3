"""Sessions, filters and formatting of the console (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudphone.console.filters import SagaFilters
from cloudphone.console.rendering import millis, relative
from cloudphone.console.session import SessionSigner
from cloudphone.domain import Principal, Role
from cloudphone.saga import SagaStatus

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_a_session_round_trips_and_expires_with_the_token() -> None:
    """The signed cookie gives the session back until its expiry, then nothing."""
    signer = SessionSigner("s" * 40)
    session, cookie = signer.issue(Principal("root", Role.ADMIN), NOW + timedelta(minutes=5))
    loaded = signer.load(cookie, now=NOW)
    assert loaded == session
    assert loaded is not None
    assert loaded.is_admin
    assert signer.load(cookie, now=NOW + timedelta(minutes=5)) is None


def test_forged_or_foreign_cookies_are_not_sessions() -> None:
    """A changed payload, another secret's cookie or garbage loads as None."""
    signer = SessionSigner("s" * 40)
    _, cookie = signer.issue(Principal("bob"), NOW + timedelta(hours=1))
    _, _, mac = cookie.partition(".")
    _, admin = signer.issue(Principal("bob", Role.ADMIN), NOW + timedelta(hours=1))
    assert signer.load(f"{admin.partition('.')[0]}.{mac}", now=NOW) is None
    assert SessionSigner("t" * 40).load(cookie, now=NOW) is None
    for junk in ("", "x", "a.b", None):
        assert signer.load(junk, now=NOW) is None


def test_csrf_tokens_differ_per_session_and_compare_safely() -> None:
    """Each sign-in has its own CSRF token; the login form's differs from any session's."""
    signer = SessionSigner("s" * 40)
    one, _ = signer.issue(Principal("a"), NOW + timedelta(hours=1))
    two, _ = signer.issue(Principal("a"), NOW + timedelta(hours=1))
    assert signer.csrf_token(one) != signer.csrf_token(two)
    assert signer.same(signer.csrf_token(one), signer.csrf_token(one))
    assert not signer.same(None, signer.csrf_token(one))
    assert not signer.same("", signer.csrf_token(one))
    assert signer.login_token(one.nonce) != signer.csrf_token(one)


def test_filters_parse_and_report_what_they_could_not_use() -> None:
    """Valid values are kept; bad ones become messages; started_by only for admins."""
    query = {"status": "failed", "range": "1h", "after": "2030-01-01T11:30", "started_by": "bob"}
    filters = SagaFilters.parse(query, admin=True)
    assert filters.status is SagaStatus.FAILED
    assert filters.created_after(NOW) == datetime(2030, 1, 1, 11, 30, tzinfo=UTC)
    assert filters.started_by == "bob"
    assert SagaFilters.parse(query, admin=False).started_by == ""
    bad = SagaFilters.parse({"status": "nope", "after": "soon", "offset": "x"}, admin=True)
    assert bad.status is None
    assert len(bad.problems) == 3
    assert filters.query_string(offset=50).endswith("offset=50")
    assert not SagaFilters().active


def test_times_and_durations_read_like_an_operator_says_them() -> None:
    """Relative times in s/min/h/d, both directions; durations in ms, s, min."""
    assert relative(NOW - timedelta(seconds=12), NOW) == "12 s ago"
    assert relative(NOW - timedelta(minutes=3, seconds=5), NOW) == "3 min ago"
    assert relative(NOW + timedelta(hours=2), NOW) == "in 2 h"
    assert relative(NOW, NOW) == "just now"
    assert relative(None, NOW) == "—"
    assert (millis(850), millis(1250), millis(184_000)) == ("850 ms", "1.2 s", "3 min 4 s")
