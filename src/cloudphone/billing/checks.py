"""Checks the billing use cases share: whose rows a caller may see, and free-text fields.

Someone else's order, payment or refund is "not found" (an admin sees all), so its id tells a
user nothing; text is stripped and bounded before anything is written.
"""

from __future__ import annotations

from typing import TypeVar

from cloudphone.billing.models import Order, Payment, Refund
from cloudphone.domain import InvalidInputError, NotFoundError, Principal

T = TypeVar("T", Order, Payment, Refund)


def visible(principal: Principal, item: T | None, kind: str, item_id: str) -> T:
    """``item`` if it exists and the caller may see it.

    Raises:
        NotFoundError: No such row, or someone else's (code ``<kind>_not_found``).
    """
    if item is None or not principal.can_see(item.user_id):
        raise NotFoundError(f"no {kind} {item_id}", code=f"{kind}_not_found")
    return item


def checked_text(value: str, what: str, limit: int, *, required: bool = False) -> str:
    """``value`` stripped, at most ``limit`` characters (and not empty if ``required``).

    Raises:
        InvalidInputError: Not a string, empty when required, or too long.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be text")
    value = value.strip()
    if required and not value:
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidInputError(f"{what} must be at most {limit} characters")
    return value
