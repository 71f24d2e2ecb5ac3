"""The billing service: orders, payments, refunds and the ``payment_refund`` saga.

Use cases live in :class:`BillingService`; the saga is built by :func:`build_refund_saga` from
the payment-provider ports (:mod:`cloudphone.billing.providers`). See ``DESIGN.md`` §3.
"""

from cloudphone.billing.models import (
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    metadata,
)
from cloudphone.billing.money import Money
from cloudphone.billing.providers.base import (
    PaymentProvider,
    ProviderError,
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
)
from cloudphone.billing.refund import REFUND_SAGA, RefundTiming, build_refund_saga
from cloudphone.billing.service import BillingService, RefundRequested, create_billing_schema

__all__ = [
    "REFUND_SAGA",
    "BillingService",
    "Money",
    "Order",
    "OrderStatus",
    "Payment",
    "PaymentProvider",
    "PaymentStatus",
    "ProviderError",
    "ProviderRefused",
    "ProviderRejected",
    "ProviderUnknownOutcome",
    "Refund",
    "RefundRequested",
    "RefundStatus",
    "RefundTiming",
    "build_refund_saga",
    "create_billing_schema",
    "metadata",
]
