"""Payments, refunds and orders: filtered lists, a payment's and a refund's page, reconcile.

Everything goes through the billing service's use cases (``list_payments``,
``list_all_refunds``, ``list_orders``, the ``get_*`` reads and ``list_refunds``), which decide
visibility: users see their own, admins everyone's (``?user=`` narrows to one user).

``POST /refunds/{id}/reconcile`` is the admin reconcile of a refund whose saga FAILED with the
payment held (NEEDS_ATTENTION): billing's ``reconcile_refund``, the use case behind the API's
``POST /refunds/{id}/reconcile``. It is CSRF-checked and answers the refund page's live part
with the result in place: 200 when recorded, 409 when refused (the saga is not FAILED, the
provider still processes the refund), 503 when the provider does not answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from cloudphone.billing.models import (
    IN_FLIGHT,
    OrderStatus,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from cloudphone.billing.service import BillingService
from cloudphone.console.filters import PAGE_SIZE, RANGES
from cloudphone.console.listing import ListFilters
from cloudphone.console.rendering import render
from cloudphone.console.saga_detail import visible_run
from cloudphone.console.security import AdminDep, SessionDep, console_of
from cloudphone.console.session import Session
from cloudphone.domain import ConflictError, Principal, UnavailableError
from cloudphone.platform import Platform
from cloudphone.saga import SagaRun, SagaStatus

router = APIRouter()

ResourceId = Annotated[str, Path(min_length=1, max_length=64)]


@dataclass(frozen=True)
class BillingList:
    """One of the billing lists.

    Attributes:
        name: Its path segment (``payments``) and rows template (``_payments_rows.html``).
        title: The page's heading.
        statuses: Its status enum (the filter offers every value).
        parent: The parent filter it takes (``order_id``, ``payment_id``), if any.
        use_case: The billing service's list use case.
    """

    name: str
    title: str
    statuses: type[StrEnum]
    parent: str | None
    use_case: Callable[[BillingService], Callable[..., Awaitable[Sequence[Any]]]]

    async def fetch(
        self, service: BillingService, principal: Principal, filters: ListFilters, now: datetime
    ) -> Sequence[Any]:
        """One page (plus a row) of what ``filters`` ask for, as ``principal`` may see it."""
        narrow: dict[str, Any] = {
            "status": self.statuses(filters.status) if filters.status else None
        }
        if self.parent:
            narrow[self.parent] = filters.parent_id(self.parent)
        return await self.use_case(service)(principal, filters.listing(now), **narrow)


LISTS: dict[str, BillingList] = {
    kind.name: kind
    for kind in (
        BillingList("payments", "Payments", PaymentStatus, "order_id", lambda s: s.list_payments),
        BillingList("refunds", "Refunds", RefundStatus, "payment_id", lambda s: s.list_all_refunds),
        BillingList("orders", "Orders", OrderStatus, None, lambda s: s.list_orders),
    )
}
"""The billing lists, in tab order."""

RECONCILED = {
    RefundStatus.SUCCEEDED: "Reconciled: the provider did refund it. The payment records the "
    "refund and its saga is resolved.",
    RefundStatus.FAILED: "Reconciled: the provider has no completed refund, so no money moved. "
    "The payment's hold is released and its saga is resolved.",
}
"""The result line of a reconcile, by the refund's status afterwards."""


async def _list_page(request: Request, session: Session, kind: BillingList) -> HTMLResponse:
    filters = ListFilters.parse(
        request.query_params,
        admin=session.is_admin,
        statuses=[s.value for s in kind.statuses],
        parent=kind.parent,
    )
    service = console_of(request).platform.billing
    rows = await kind.fetch(service, session.principal, filters, datetime.now(UTC))
    htmx = request.headers.get("HX-Request") == "true"
    return render(
        request,
        f"_{kind.name}_rows.html" if htmx else "billing.html",
        kind=kind,
        lists=LISTS,
        filters=filters,
        rows=rows[:PAGE_SIZE],
        more=len(rows) > PAGE_SIZE,
        page_size=PAGE_SIZE,
        ranges=list(RANGES),
        nav="billing",
    )


@router.get("/payments", response_class=HTMLResponse)
async def payments_page(request: Request, session: SessionDep) -> Any:
    """Payments, newest first (htmx: the rows alone)."""
    return await _list_page(request, session, LISTS["payments"])


@router.get("/refunds", response_class=HTMLResponse)
async def refunds_page(request: Request, session: SessionDep) -> Any:
    """Refunds, newest first (htmx: the rows alone)."""
    return await _list_page(request, session, LISTS["refunds"])


@router.get("/orders", response_class=HTMLResponse)
async def orders_page(request: Request, session: SessionDep) -> Any:
    """Orders, newest first (htmx: the rows alone)."""
    return await _list_page(request, session, LISTS["orders"])


@router.get("/payments/{payment_id}", response_class=HTMLResponse)
async def payment_page(request: Request, session: SessionDep, payment_id: ResourceId) -> Any:
    """One payment with its order and its refunds (htmx: its live part)."""
    service = console_of(request).platform.billing
    payment = await service.get_payment(session.principal, payment_id)
    refunds = await service.list_refunds(session.principal, payment_id)
    order = await service.get_order(session.principal, payment.order_id)
    htmx = request.headers.get("HX-Request") == "true"
    return render(
        request,
        "_payment_live.html" if htmx else "payment.html",
        payment=payment,
        refunds=list(reversed(refunds)),  # newest first, like every list
        order=order,
        nav="billing",
    )


@router.get("/refunds/{refund_id}", response_class=HTMLResponse)
async def refund_page(request: Request, session: SessionDep, refund_id: ResourceId) -> Any:
    """One refund with its payment and its saga (htmx: its live part)."""
    context = await _refund(console_of(request).platform, session, refund_id)
    htmx = request.headers.get("HX-Request") == "true"
    return render(request, "_refund_live.html" if htmx else "refund.html", nav="billing", **context)


@router.post("/refunds/{refund_id}/reconcile", response_class=HTMLResponse)
async def reconcile(request: Request, session: AdminDep, refund_id: ResourceId) -> Any:
    """Reconcile the refund from the provider's answer; the result shows in place."""
    platform = console_of(request).platform
    status, result = 200, ("ok", "")
    try:
        done = await platform.billing.reconcile_refund(session.principal, refund_id)
        result = ("ok", RECONCILED.get(done.status, f"Reconciled: the refund is {done.status}."))
    except ConflictError as error:
        status, result = 409, ("error", f"Reconcile refused: {error.message}")
    except UnavailableError as error:
        status, result = 503, ("error", f"Reconcile could not finish: {error.message}")
    context = {**await _refund(platform, session, refund_id), "result": result}
    return render(request, "_refund_live.html", status_code=status, **context)


def reconcilable(refund: Refund, run: SagaRun | None) -> bool:
    """Whether an operator may reconcile the refund now.

    It must still hold its payment (NEEDS_ATTENTION, or PENDING/PROCESSING) and its saga be
    FAILED: the reconcile use case refuses anything else.
    """
    return run is not None and run.status is SagaStatus.FAILED and refund.status in IN_FLIGHT


async def _refund(platform: Platform, session: Session, refund_id: str) -> dict[str, Any]:
    service = platform.billing
    refund = await service.get_refund(session.principal, refund_id)
    payment = await service.get_payment(session.principal, refund.payment_id)
    run = await visible_run(platform, session, refund.saga_id)
    return {
        "refund": refund,
        "payment": payment,
        "run": run,
        "can_reconcile": session.is_admin and reconcilable(refund, run),
        "result": None,
    }
