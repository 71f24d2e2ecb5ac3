"""The shared kernel of the services: who is acting, and the errors use cases raise.

Services raise these; ``cloudphone.api.errors`` maps them to HTTP status codes, the CLI to exit
codes. Nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a principal may do."""

    USER = "user"
    """Acts on its own resources only."""
    ADMIN = "admin"
    """Sees and acts on every resource; may run operator actions."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a use case."""

    user_id: str
    role: Role = Role.USER

    @property
    def is_admin(self) -> bool:
        """True for admins."""
        return self.role is Role.ADMIN

    def can_see(self, owner_id: str) -> bool:
        """Whether this principal may read or act on a resource owned by ``owner_id``."""
        return self.is_admin or self.user_id == owner_id


class DomainError(Exception):
    """Base of the errors a use case raises on purpose; ``code`` is a stable machine name."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInputError(DomainError):
    """The request is malformed or breaks a business rule about its values (HTTP 422/400)."""

    code = "invalid_input"


class NotFoundError(DomainError):
    """No such resource, or the caller may not know it exists (HTTP 404)."""

    code = "not_found"


class ForbiddenError(DomainError):
    """The caller is known but not allowed to do this (HTTP 403)."""

    code = "forbidden"


class ConflictError(DomainError):
    """The resource's current state forbids the action (duplicate, busy, wrong status; 409)."""

    code = "conflict"


class QuotaExceededError(ConflictError):
    """The action would exceed the caller's quota (HTTP 409)."""

    code = "quota_exceeded"


class PayloadTooLargeError(InvalidInputError):
    """The upload is larger than allowed (HTTP 413)."""

    code = "payload_too_large"


class UnavailableError(DomainError):
    """A dependency is down; try again later (HTTP 503)."""

    code = "unavailable"
