"""Operator reconciliation of a refund whose saga FAILED (payment still held).

The refund saga fails for an operator when it cannot tell whether the provider refunded (or
when the refund exists at the provider but the saga had already turned back). Once the
provider answers again, :meth:`Reconciler.reconcile` records what it says — exactly as the
saga would have — and closes the FAILED run with a note:

* refund at the provider, succeeded → payment PARTIALLY_REFUNDED/REFUNDED, refund SUCCEEDED;
* refund at the provider, failed, or no refund at all → payment back to its status before the
  hold, refund FAILED;
* still pending at the provider, or the provider does not answer → 409/503, nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from cloudphone.billing import store
from cloudphone.billing.models import IN_FLIGHT, Payment, Refund
from cloudphone.billing.providers.base import (
    PaymentProvider,
    ProviderError,
    ProviderRefund,
    RefundState,
)
from cloudphone.billing.settlement import (
    SettlementConflict,
    order_follows_payment_txn,
    settle_refund_txn,
)
from cloudphone.domain import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    Principal,
    UnavailableError,
)
from cloudphone.saga import OperatorActionError, SagaEngine, SagaStatus


class Reconciler:
    """Settles refunds of FAILED refund sagas from the provider's answer (admins only)."""

    def __init__(self, engine: SagaEngine, providers: Mapping[str, PaymentProvider]) -> None:
        self.engine = engine
        self.db = engine.db
        self.providers = providers

    async def reconcile(self, principal: Principal, refund_id: str) -> Refund:
        """Ask the provider about the refund and record its answer; returns the refund."""
        if not principal.is_admin:
            raise ForbiddenError("reconciling a refund needs the admin role")
        refund, payment = await self._load(refund_id)
        run = await self.engine.get(refund.saga_id)
        if run.status is not SagaStatus.FAILED:
            raise ConflictError(
                f"the refund's saga is {run.status}; only a FAILED saga's refund is reconciled "
                "by hand",
                code="saga_not_failed",
            )
        found = await self._ask(payment, refund)
        if found is not None and found.state is RefundState.PENDING:
            raise ConflictError(
                f"refund {found.id} is still processing at the provider; try again later",
                code="refund_processing",
            )
        note = await self._record(refund, found)
        # Resolved already (a repeated reconcile) is fine: the rows are what matters.
        with contextlib.suppress(OperatorActionError):
            await self.engine.resolve(refund.saga_id, note, actor=principal.user_id)
        done, _ = await self._load(refund_id)
        return done

    async def _load(self, refund_id: str) -> tuple[Refund, Payment]:
        async with self.db.read() as conn:
            refund = await store.refund_txn(conn, refund_id)
            if refund is None:
                raise NotFoundError(f"no refund {refund_id}", code="refund_not_found")
            payment = await store.payment_txn(conn, refund.payment_id)
        assert payment is not None
        return refund, payment

    async def _ask(self, payment: Payment, refund: Refund) -> ProviderRefund | None:
        provider = self.providers.get(payment.provider)
        if provider is None:
            raise UnavailableError(f"payment provider {payment.provider!r} is not configured")
        try:
            return await provider.find_refund(
                charge_id=payment.provider_payment_id or "", refund_id=refund.id
            )
        except ProviderError as error:
            raise UnavailableError(f"the provider did not answer: {error.reason}") from None

    async def _record(self, refund: Refund, found: ProviderRefund | None) -> str:
        if refund.status not in IN_FLIGHT:
            return f"refund was already {refund.status}; nothing to record"
        succeeded = found is not None and found.state is RefundState.SUCCEEDED
        if found is None:
            reason = "reconciled: the provider has no such refund, no money moved"
        else:
            reason = found.failure_reason or f"reconciled: refund {found.id} is {found.state}"
        try:
            async with self.db.begin() as conn:
                await settle_refund_txn(
                    conn,
                    refund.id,
                    provider_refund_id=found.id if found else None,
                    succeeded=succeeded,
                    failure_reason=reason,
                )
                await order_follows_payment_txn(conn, refund.payment_id)
        except SettlementConflict as error:
            raise ConflictError(str(error), code="reconcile_conflict") from None
        if succeeded:
            return f"reconciled from the provider: refund {refund.id} succeeded"
        return f"reconciled from the provider: refund {refund.id} failed ({reason})"
