"""Signing in and out of the console; sessions, CSRF and security headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from fastapi import FastAPI

from cloudphone.domain import Role
from tests.integration.console.conftest import Browser, token
from tests.support.console import csrf_of, elements, sign_in


def set_cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header of ``name`` in ``response``."""
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert found, f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}"
    return found[0]


async def test_signing_in_sets_a_strict_httponly_cookie_expiring_with_the_token(
    anonymous: httpx.AsyncClient,
) -> None:
    """The session cookie is HttpOnly, SameSite=Strict, scoped to /ui, and ends with the token."""
    ttl = timedelta(minutes=20)
    answer = await sign_in(anonymous, token("alice", ttl=ttl), next_path="/ui/sagas")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/sagas"
    cookie = set_cookie(answer, "cloudphone_session")
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in parts
    assert "samesite=strict" in parts
    assert "path=/ui" in parts
    assert "secure" not in parts  # plain http here
    expires = parsedate_to_datetime(
        next(p for p in cookie.split(";") if "expires=" in p.lower()).split("=", 1)[1]
    )
    assert expires <= datetime.now(UTC) + ttl
    assert expires >= datetime.now(UTC) + ttl - timedelta(minutes=1)
    page = await anonymous.get("/ui/sagas")
    assert page.status_code == 200
    assert elements(page.text, "data-user", "alice")


async def test_the_cookie_is_secure_behind_https(app: FastAPI) -> None:
    """Over https the session cookie is marked Secure."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://cloudphone.test") as c:
        answer = await sign_in(c, token("alice"))
    assert "secure" in [
        p.strip().lower() for p in set_cookie(answer, "cloudphone_session").split(";")
    ]


async def test_a_bad_token_is_refused_with_the_reason_and_never_echoed(
    anonymous: httpx.AsyncClient,
) -> None:
    """A forged or expired token gets 401 and the reason; the page never repeats the token."""
    forged = token("alice")[:-4] + "AAAA"
    answer = await sign_in(anonymous, forged)
    assert answer.status_code == 401
    assert "refused" in answer.text
    assert forged not in answer.text
    assert "cloudphone_session" not in answer.headers.get("set-cookie", "")
    expired = await sign_in(
        anonymous,
        token("alice", ttl=timedelta(seconds=5), now=datetime.now(UTC) - timedelta(minutes=1)),
    )
    assert expired.status_code == 401
    assert "expired" in expired.text


async def test_the_sign_in_form_needs_its_csrf_token(anonymous: httpx.AsyncClient) -> None:
    """A sign-in POST without the form's token (login CSRF) is refused."""
    await anonymous.get("/ui/login")
    answer = await anonymous.post("/ui/login", data={"token": token("alice")})
    assert answer.status_code == 403
    assert "cloudphone_session" not in answer.headers.get("set-cookie", "")


async def test_without_a_session_pages_redirect_to_the_sign_in_page(
    anonymous: httpx.AsyncClient,
) -> None:
    """Pages redirect to /ui/login with the way back; htmx requests get HX-Redirect."""
    page = await anonymous.get("/ui/sagas")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=/ui/sagas"
    poll = await anonymous.get("/ui/sagas", headers={"HX-Request": "true"})
    assert poll.status_code == 401
    assert poll.headers["HX-Redirect"] == "/ui/login?next=/ui/sagas"
    forged = await anonymous.post("/ui/sagas/x/retry", data={"csrf_token": "x"})
    assert forged.status_code == 303


async def test_a_forged_session_cookie_is_not_a_session(anonymous: httpx.AsyncClient) -> None:
    """A cookie whose signature does not match is ignored."""
    await sign_in(anonymous, token("alice"))
    value = anonymous.cookies["cloudphone_session"]
    anonymous.cookies.clear()
    body, _, _mac = value.partition(".")
    anonymous.cookies.set(
        "cloudphone_session", f"{body}.AAAA", domain="cloudphone.test", path="/ui"
    )
    assert (await anonymous.get("/ui/")).status_code == 303


async def test_signing_out_clears_the_session(browser: Browser) -> None:
    """Sign out expires the cookie; the next page asks to sign in again."""
    client, csrf = await browser("alice")
    refused = await client.post("/ui/logout")
    assert refused.status_code == 403
    answer = await client.post("/ui/logout", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
    cookie = set_cookie(answer, "cloudphone_session").lower()
    assert "max-age=0" in cookie
    assert (await client.get("/ui/")).status_code == 303


async def test_pages_send_a_strict_content_security_policy_and_no_inline_code(
    browser: Browser,
) -> None:
    """Every page allows only the console's own assets and carries no inline script or style."""
    client, _ = await browser("root", Role.ADMIN)
    for path in ("/ui/", "/ui/sagas", "/ui/devices", "/ui/quotas", "/ui/login"):
        page = await client.get(path, follow_redirects=True)
        assert page.status_code == 200, path
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        scripts = elements(page.text, "src") + elements(page.text, "type")
        inline = [
            e
            for e in elements(page.text, "id")
            if e.tag == "script" and e.attrs.get("type") != "application/json"
        ]
        assert not inline, path
        assert not elements(page.text, "style"), path
        assert all(
            str(e.attrs["src"]).startswith("/ui/static/")
            for e in scripts
            if e.tag == "script" and "src" in e.attrs
        ), path
    asset = await client.get("/ui/static/vendor/htmx-2.0.11.min.js")
    assert asset.status_code == 200
    assert asset.headers["cache-control"] == "no-cache"


async def test_the_csrf_token_is_bound_to_the_session(browser: Browser) -> None:
    """Another session's CSRF token is refused."""
    alice, _ = await browser("root", Role.ADMIN)
    _, other = await browser("root", Role.ADMIN)
    page = await alice.get("/ui/")
    assert csrf_of(page.text) != other
    answer = await alice.post("/ui/logout", data={"csrf_token": other})
    assert answer.status_code == 403
