"""Typed dependencies of the routes: the platform, the caller, admin-only, Idempotency-Key.

Use them as parameter annotations::

    @router.post("/refunds", status_code=202)
    async def request_refund(
        body: RefundRequest, platform: PlatformDep, principal: PrincipalDep,
        idempotency: IdempotencyKeyDep,
    ) -> ...
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from cloudphone.api.auth import TokenVerifier
from cloudphone.api.errors import AuthenticationError
from cloudphone.domain import ForbiddenError, Principal, UnavailableError
from cloudphone.platform import Platform
from cloudphone.settings import Settings

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_ENGINE_KEY = 255
"""Longest idempotency key the engine stores."""


async def get_platform(request: Request) -> Platform:
    """The platform serving this app (set by the app's lifespan)."""
    platform: Platform | None = getattr(request.app.state, "platform", None)
    if platform is None:
        raise UnavailableError("the platform is not started")
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]
"""The running :class:`~cloudphone.platform.Platform`."""


class BearerAuth(SecurityBase):
    """The ``bearer`` security scheme, verifying the token in the same dependency.

    One dependency instead of FastAPI's ``HTTPBearer`` plus a verifier on top: each level of
    dependency costs every request.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description="A JWT from `cloudphone token create --user U --role user|admin`.",
        )
        self.scheme_name = "bearer"

    async def __call__(self, request: Request) -> Principal:
        """The caller, from the ``Authorization: Bearer`` token; 401 without a valid one."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)")
        verifier: TokenVerifier = request.app.state.tokens
        return verifier.verify(token.strip())


get_principal = BearerAuth()
"""Dependency: the authenticated caller."""


def token_verifier(settings: Settings) -> TokenVerifier:
    """The verifier of the app's bearer tokens (``app.state.tokens``)."""
    if settings.jwt_secret is None:
        raise ValueError("settings without a JWT secret: load them with load_settings()")
    return TokenVerifier(settings.jwt_secret.get_secret_value(), issuer=settings.jwt_issuer)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
"""The authenticated caller (user or admin)."""


async def require_admin(principal: PrincipalDep) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    if not principal.is_admin:
        raise ForbiddenError("this action needs the admin role")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
"""The authenticated caller, an admin."""


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` header value, scoped to the caller.

    Attributes:
        key: The value the client sent.
        user_id: Who sent it: two users' equal keys never meet.
    """

    key: str
    user_id: str

    @property
    def engine_key(self) -> str:
        """The key to pass to ``SagaEngine.start(idempotency_key=…)`` (or a service)."""
        scoped = f"{self.user_id}:{self.key}"
        if len(scoped) <= MAX_ENGINE_KEY:
            return scoped
        return "sha256:" + hashlib.sha256(f"{self.user_id}\0{self.key}".encode()).hexdigest()


async def get_idempotency_key(
    principal: PrincipalDep,
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            min_length=1,
            max_length=200,
            pattern=r"^[!-~]+$",
            description=(
                "Makes the request safe to repeat: the same key (per user) returns the saga the "
                "first request started, with status 200 instead of 202."
            ),
        ),
    ] = None,
) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key``, scoped to the caller, or None."""
    return None if key is None else IdempotencyKey(key, principal.user_id)


IdempotencyKeyDep = Annotated[IdempotencyKey | None, Depends(get_idempotency_key)]
"""The optional ``Idempotency-Key`` header of a route that starts a saga."""


async def single_valued_query(request: Request) -> None:
    """Refuse a query parameter given more than once: FastAPI would keep only the last one.

    Raises:
        RequestValidationError: Which parameters were repeated (answered 422).
    """
    params = request.query_params
    repeated = sorted({key for key in params if len(params.getlist(key)) > 1})
    if repeated:
        raise RequestValidationError(
            [{"loc": ("query", key), "msg": "given more than once"} for key in repeated]
        )
