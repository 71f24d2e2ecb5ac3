"""Billing API: orders, payments, refunds. Thin: validate shapes, call the use case, render.

Amounts are integers in the currency's minor unit (cents); currencies are ISO 4217 codes.
Users see and act on their own orders, payments and refunds only; anything else is 404. The
lists (``GET /orders``, ``/payments``, ``/refunds``) are newest first and paginated like
``/sagas``; a user asking for someone else's (``?user_id=``) gets 403.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Generic, Self, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudphone.api.deps import AdminDep, IdempotencyKeyDep, PlatformDep, PrincipalDep
from cloudphone.api.errors import error_responses
from cloudphone.api.idempotency import set_started_status
from cloudphone.api.schemas import CreatedAfter, CreatedBefore
from cloudphone.billing.models import (
    Listing,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)

router = APIRouter(tags=["billing"], responses=error_responses(401, 422))

Id = Annotated[str, Path(min_length=1, max_length=64)]
Amount = Annotated[
    int, Field(strict=True, description="Minor units of the currency (cents for EUR).")
]


class OrderCreate(BaseModel):
    """A new order."""

    model_config = ConfigDict(extra="forbid")
    amount: Amount
    currency: str = Field(min_length=1, max_length=8, description="ISO 4217 code, e.g. EUR.")
    description: str = Field(max_length=500)


class OrderOut(BaseModel):
    """An order."""

    id: str
    user_id: str
    amount: int
    currency: str
    description: str
    status: OrderStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        """Render an order."""
        return cls.model_validate(order, from_attributes=True)


class PayRequest(BaseModel):
    """How to pay an order."""

    model_config = ConfigDict(extra="forbid")
    provider: str | None = Field(
        default=None, max_length=32, description="`sandbox` or `stripe`; default from settings."
    )
    payment_method: str | None = Field(
        default=None, max_length=255, description="Provider payment method (Stripe `pm_…`)."
    )


class PaymentOut(BaseModel):
    """A payment of an order."""

    id: str
    order_id: str
    user_id: str
    provider: str
    provider_payment_id: str | None
    amount: int
    currency: str
    status: PaymentStatus
    refunded_amount: int
    refundable_amount: int = Field(description="Paid minus refunded (refunds in flight aside).")
    held_by_refund: str | None = Field(description="The refund in progress (REFUNDING).")
    failure_reason: str | None
    reconcile_note: str | None = Field(
        description="When a payment left PENDING (a crash, a lost answer) was settled by asking "
        "the provider: when it was asked, what it answered, what was concluded."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        """Render a payment."""
        return cls.model_validate(payment, from_attributes=True)


class RefundCreate(BaseModel):
    """A refund request."""

    model_config = ConfigDict(extra="forbid")
    amount: Amount
    reason: str | None = Field(default=None, max_length=500)
    currency: str | None = Field(
        default=None, max_length=8, description="Optional; must be the payment's currency."
    )


class RefundOut(BaseModel):
    """A refund."""

    id: str
    payment_id: str
    user_id: str
    amount: int
    currency: str
    reason: str | None
    status: RefundStatus
    saga_id: str
    provider_refund_id: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, refund: Refund) -> RefundOut:
        """Render a refund."""
        return cls.model_validate(refund, from_attributes=True)


class RefundAccepted(BaseModel):
    """A refund was requested; its saga runs in the background."""

    saga_id: str = Field(description="Follow it at `GET /sagas/{saga_id}`.")
    refund: RefundOut
    payment: PaymentOut = Field(description="The payment as it stood when the refund was made.")


Item = TypeVar("Item", bound=BaseModel)
MAX_PAGE = 200


class Page(BaseModel, Generic[Item]):
    """One page of a list, newest first."""

    items: list[Item]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")

    @classmethod
    def of(cls, items: list[Item], listing: Listing) -> Self:
        """The page of ``items``, fetched with one row more than ``listing.limit``."""
        more = len(items) > listing.limit
        return cls(
            items=items[: listing.limit],
            limit=listing.limit,
            offset=listing.offset,
            next_offset=listing.offset + listing.limit if more else None,
        )


class OrderPage(Page[OrderOut]):
    """One page of orders, newest first."""


class PaymentPage(Page[PaymentOut]):
    """One page of payments, newest first."""


class RefundPage(Page[RefundOut]):
    """One page of refunds, newest first."""


async def _listing(
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only this user's (users: only themselves, else 403).",
        ),
    ] = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Listing:
    return Listing(user_id, created_after, created_before, limit, offset)


ListingDep = Annotated[Listing, Depends(_listing)]
"""The filters and page every billing list shares."""


def _one_more(listing: Listing) -> Listing:
    """The listing asking for one row more, which tells whether a next page exists."""
    return replace(listing, limit=listing.limit + 1)


@router.get("/orders", summary="List orders", responses=error_responses(403))
async def list_orders(
    platform: PlatformDep,
    principal: PrincipalDep,
    listing: ListingDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
) -> OrderPage:
    """Your orders, newest first (admins: everyone's, or one user's with ``user_id``)."""
    found = await platform.billing.list_orders(principal, _one_more(listing), status=status)
    return OrderPage.of([OrderOut.of(order) for order in found], listing)


@router.get("/payments", summary="List payments", responses=error_responses(403))
async def list_payments(
    platform: PlatformDep,
    principal: PrincipalDep,
    listing: ListingDep,
    status: Annotated[
        PaymentStatus | None, Query(description="Only payments in this status.")
    ] = None,
    order_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only this order's.")
    ] = None,
) -> PaymentPage:
    """Your payments, newest first (admins: everyone's, or one user's with ``user_id``)."""
    found = await platform.billing.list_payments(
        principal, _one_more(listing), status=status, order_id=order_id
    )
    return PaymentPage.of([PaymentOut.of(payment) for payment in found], listing)


@router.get("/refunds", summary="List refunds", responses=error_responses(403))
async def list_all_refunds(
    platform: PlatformDep,
    principal: PrincipalDep,
    listing: ListingDep,
    status: Annotated[
        RefundStatus | None, Query(description="Only refunds in this status.")
    ] = None,
    payment_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only this payment's.")
    ] = None,
) -> RefundPage:
    """Your refunds, newest first (admins: everyone's, or one user's with ``user_id``)."""
    found = await platform.billing.list_all_refunds(
        principal, _one_more(listing), status=status, payment_id=payment_id
    )
    return RefundPage.of([RefundOut.of(refund) for refund in found], listing)


@router.post("/orders", status_code=201, summary="Create an order", response_model=OrderOut)
async def create_order(
    body: OrderCreate, platform: PlatformDep, principal: PrincipalDep
) -> OrderOut:
    """A PENDING order of the caller's."""
    order = await platform.billing.create_order(
        principal, amount=body.amount, currency=body.currency, description=body.description
    )
    return OrderOut.of(order)


@router.get("/orders/{order_id}", summary="Read an order", responses=error_responses(404))
async def get_order(order_id: Id, platform: PlatformDep, principal: PrincipalDep) -> OrderOut:
    """The order (404 if it is not yours)."""
    return OrderOut.of(await platform.billing.get_order(principal, order_id))


@router.post(
    "/orders/{order_id}/cancel", summary="Cancel an order", responses=error_responses(404, 409)
)
async def cancel_order(order_id: Id, platform: PlatformDep, principal: PrincipalDep) -> OrderOut:
    """Cancel a PENDING order (409 once paid or while a payment is in progress)."""
    return OrderOut.of(await platform.billing.cancel_order(principal, order_id))


@router.post(
    "/orders/{order_id}/pay",
    status_code=201,
    summary="Pay an order",
    responses=error_responses(404, 409, 503),
)
async def pay_order(
    order_id: Id, platform: PlatformDep, principal: PrincipalDep, body: PayRequest | None = None
) -> PaymentOut:
    """Charge a PENDING order. The payment is SUCCESS, or FAILED with the provider's reason.

    503 when the provider could not be reached or its answer was lost; paying again retries
    the same payment safely.
    """
    body = body or PayRequest()
    payment = await platform.billing.pay_order(
        principal, order_id, provider=body.provider, payment_method=body.payment_method
    )
    return PaymentOut.of(payment)


@router.get("/payments/{payment_id}", summary="Read a payment", responses=error_responses(404))
async def get_payment(payment_id: Id, platform: PlatformDep, principal: PrincipalDep) -> PaymentOut:
    """The payment (404 if it is not yours)."""
    return PaymentOut.of(await platform.billing.get_payment(principal, payment_id))


@router.get(
    "/payments/{payment_id}/refunds",
    summary="List a payment's refunds",
    responses=error_responses(404),
)
async def list_refunds(
    payment_id: Id, platform: PlatformDep, principal: PrincipalDep
) -> list[RefundOut]:
    """Every refund of the payment, oldest first."""
    return [RefundOut.of(r) for r in await platform.billing.list_refunds(principal, payment_id)]


@router.post(
    "/payments/{payment_id}/refunds",
    status_code=202,
    summary="Refund (part of) a payment",
    responses={
        **error_responses(404, 409),
        200: {"model": RefundAccepted, "description": "The Idempotency-Key was used before."},
    },
)
async def request_refund(
    payment_id: Id,
    body: RefundCreate,
    response: Response,
    platform: PlatformDep,
    principal: PrincipalDep,
    idempotency: IdempotencyKeyDep,
) -> RefundAccepted:
    """Start the ``payment_refund`` saga: 202 with the refund and its saga id.

    One refund at a time per payment (409 ``refund_in_progress`` otherwise, or
    ``refund_needs_attention`` while the earlier one waits for an operator to reconcile it with
    ``POST /refunds/{id}/reconcile``). 422 for an amount
    that is not positive or exceeds what is left to refund, or a currency that is not the
    payment's. The same ``Idempotency-Key`` answers 200 with the first request's refund.
    """
    done = await platform.billing.request_refund(
        principal,
        payment_id,
        amount=body.amount,
        reason=body.reason,
        currency=body.currency,
        idempotency_key=idempotency.engine_key if idempotency is not None else None,
    )
    set_started_status(response, created=done.created)
    response.headers["Location"] = f"/refunds/{done.refund.id}"
    return RefundAccepted(
        saga_id=done.saga_id, refund=RefundOut.of(done.refund), payment=PaymentOut.of(done.payment)
    )


@router.get("/refunds/{refund_id}", summary="Read a refund", responses=error_responses(404))
async def get_refund(refund_id: Id, platform: PlatformDep, principal: PrincipalDep) -> RefundOut:
    """The refund (404 if it is not yours)."""
    return RefundOut.of(await platform.billing.get_refund(principal, refund_id))


@router.post(
    "/refunds/{refund_id}/reconcile",
    summary="Operator: settle a stuck refund from the provider's answer",
    responses=error_responses(403, 404, 409, 503),
)
async def reconcile_refund(refund_id: Id, platform: PlatformDep, admin: AdminDep) -> RefundOut:
    """Settle a refund whose saga FAILED with the payment held (admins).

    Asks the provider, records its answer (SUCCEEDED, or FAILED with the hold released) and
    resolves the saga with a note.
    """
    return RefundOut.of(await platform.billing.reconcile_refund(admin, refund_id))
