"""Who is signed in, CSRF checks, admin-only routes, and the security headers of every answer.

Dependencies for the routes::

    async def page(request: Request, session: SessionDep) -> HTMLResponse: ...     # read
    async def act(request: Request, session: AdminDep) -> HTMLResponse: ...        # POST, admin

:data:`SessionDep` redirects to the sign-in page without a valid session; :data:`CsrfDep`
also refuses (403) a request whose CSRF token is missing or wrong; :data:`AdminDep` also
refuses callers who are not admins. The server decides: hiding a button is only a courtesy.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from cloudphone.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    SessionSigner,
)
from cloudphone.domain import ForbiddenError, Principal, UnavailableError
from cloudphone.platform import Platform

TokenCheck = Callable[[str], tuple[Principal, datetime]]
"""Verifies a bearer token: the principal and the token's expiry; raises a DomainError."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
"""Only the console's own assets: no inline script or style, no other origin, no framing."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SignInRequired(Exception):
    """No valid session: the answer is a redirect to the sign-in page."""


class CsrfRejected(ForbiddenError):
    """A state-changing request without the session's CSRF token (HTTP 403)."""

    code = "csrf_rejected"


@dataclass
class ConsoleContext:
    """What the console's routes share: the platform, token checks and the session signer.

    Args:
        platform_of: Returns the running platform (None before the API's lifespan set it).
        verify: Checks a bearer token at sign-in (the API's own verifier: same auth).
    """

    platform_of: Callable[[], Platform | None]
    verify: TokenCheck
    _signer: SessionSigner | None = field(default=None, repr=False)

    @property
    def platform(self) -> Platform:
        """The running platform; UnavailableError while it is starting."""
        platform = self.platform_of()
        if platform is None:
            raise UnavailableError("the platform is not started")
        return platform

    @property
    def signer(self) -> SessionSigner:
        """The session signer, keyed from the platform's JWT secret."""
        if self._signer is None:
            secret = self.platform.settings.jwt_secret
            if secret is None:
                raise UnavailableError("the platform has no JWT secret")
            self._signer = SessionSigner(secret.get_secret_value())
        return self._signer


def console_of(request: Request) -> ConsoleContext:
    """The console context of the app serving ``request``."""
    context: ConsoleContext = request.app.state.console
    return context


async def current_session(request: Request) -> Session:
    """The signed-in session; :class:`SignInRequired` without one."""
    session = console_of(request).signer.load(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired
    request.state.session = session
    return session


SessionDep = Annotated[Session, Depends(current_session)]
"""The signed-in session (redirects to the sign-in page without one)."""


async def checked_csrf(request: Request, session: SessionDep) -> Session:
    """The session, once the request proved it carries the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    signer = console_of(request).signer
    if not signer.same(sent, signer.csrf_token(session)):
        raise CsrfRejected("this request lacks the form's CSRF token: reload the page, try again")
    return session


CsrfDep = Annotated[Session, Depends(checked_csrf)]
"""The session of a state-changing request whose CSRF token was checked."""


async def admin_session(session: CsrfDep) -> Session:
    """The session of a CSRF-checked request by an admin (ForbiddenError otherwise)."""
    if not session.is_admin:
        raise ForbiddenError("this action needs the admin role")
    return session


AdminDep = Annotated[Session, Depends(admin_session)]
"""A CSRF-checked state-changing request by an admin."""


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Add the security headers, ``Cache-Control`` for pages and ``Server-Timing``."""
    started = time.perf_counter()
    # Decided before routing: the static mount rewrites the scope's root_path on the way in.
    static = request.url.path.startswith(f"{request.scope.get('root_path', '')}/static/")
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    # Pages hold data of the session: never cached. Assets revalidate (their ETag) instead.
    response.headers["Cache-Control"] = "no-cache" if static else "no-store"
    elapsed = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
    return response
