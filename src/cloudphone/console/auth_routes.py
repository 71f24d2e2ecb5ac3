"""Sign in with a bearer token (``POST /ui/login``, field ``token``) and sign out.

The token is only ever sent in the form's body: never in a URL, never logged, never echoed
back. The session cookie is HttpOnly, SameSite=Strict, scoped to the console's path, Secure
when the request came over https, and expires when the token does.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloudphone.console.rendering import render
from cloudphone.console.security import CsrfDep, CsrfRejected, console_of
from cloudphone.console.session import LOGIN_COOKIE, SESSION_COOKIE
from cloudphone.domain import DomainError

router = APIRouter()

LOGIN_FORM_TTL = 3600
"""Seconds a sign-in form stays valid."""


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    """The sign-in form (or straight on, when already signed in)."""
    console = console_of(request)
    if console.signer.load(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(safe_next(request, next), status_code=303)
    return _login_form(request, next)


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=8192)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Trade a bearer token for a session cookie, then go where the operator was going."""
    console = console_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not console.signer.same(csrf_token, console.signer.login_token(nonce)):
        raise CsrfRejected("the sign-in form expired: reload the page and sign in again")
    if not token.strip():
        return _login_form(request, next, "Paste a token to sign in.", 422)
    try:
        principal, expires_at = console.verify(token.strip())
    except DomainError as error:
        return _login_form(request, next, f"That token was refused: {error.message}.", 401)
    _, cookie = console.signer.issue(principal, expires_at)
    response = RedirectResponse(safe_next(request, next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=max(int((expires_at - datetime.now(UTC)).total_seconds()), 0),
        expires=expires_at,
        path=_cookie_path(request),
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    return response


@router.post("/logout")
async def logout(request: Request, session: CsrfDep) -> Response:
    """Sign out: the session cookie is cleared."""
    response = RedirectResponse(f"{_base(request)}/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path=_cookie_path(request),
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def _login_form(
    request: Request, next: str, error: str | None = None, status: int = 200
) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_hex(16)
    response = render(
        request,
        "login.html",
        status_code=status,
        login_csrf=console_of(request).signer.login_token(nonce),
        next=next if next.startswith(_base(request) + "/") else "",
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_FORM_TTL,
        path=_cookie_path(request),
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


def safe_next(request: Request, target: str) -> str:
    """``target`` if it is a path inside the console, else the console's home."""
    base = _base(request)
    inside = target.startswith(base + "/") and "//" not in target and "\\" not in target
    return target if inside else f"{base}/"


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _cookie_path(request: Request) -> str:
    return _base(request) or "/"
