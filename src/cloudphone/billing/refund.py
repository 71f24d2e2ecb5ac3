"""The ``payment_refund`` saga: hold the payment, refund at the provider, record the result.

Steps (``DESIGN.md`` §3):

1. ``SET_REFUNDING_STATUS`` — transactional, compensatable. Locks the payment; only a SUCCESS
   or PARTIALLY_REFUNDED payment not held by another refund, with enough left to refund, moves
   to REFUNDING with ``held_by_refund`` naming this refund. Compensation (transactional)
   releases only its own hold and marks the refund FAILED with the reason.
2. ``CALL_PROVIDER_REFUND`` — the pivot. The provider's idempotency key is the refund id (as
   Idempotency-Key and as metadata). Before each request it records, in a small transaction of
   its own, that a request is going out (``outcome_unknown = true``); only a definitive "no money
   moved" (rejected, refused) clears it. When an earlier request's outcome is
   unknown — a timeout, a lost connection, a 5xx, or a worker killed mid-call — the attempt
   first asks the provider for a refund with this id and, if there is one, takes it as the
   answer. A rejection fails the pivot at once (compensate); refusals (connection refused, rate
   limited) and unknown outcomes are retried (4 attempts). Its compensation runs first when the
   saga turns back: nothing to undo if every request was answered definitively; otherwise it
   asks the provider again — no refund there means nothing moved; a refund there, or no answer
   after the retries, marks the refund NEEDS_ATTENTION and fails the saga for an operator with
   the payment still held. It never lets the payment go back to SUCCESS while money may have moved.
3. ``AWAIT_PROVIDER_REFUND`` — after the pivot. A refund the provider accepted but still
   processes ("pending") is polled durably (``RetryLater``) until final; the refund row shows
   PROCESSING meanwhile. A refund the provider finally fails is handled forward by step 4.
4. ``UPDATE_PAYMENT_STATUS`` — transactional. Adds the amount to ``refunded_amount``; REFUNDED
   when all of it is refunded, else PARTIALLY_REFUNDED; releases the hold; refund SUCCEEDED.
   If the provider failed the refund: payment back to its status before the hold, refund FAILED.
5. ``UPDATE_ORDER_STATUS`` — transactional. The order follows the payment.

Deadline 5 minutes (before the pivot); 4 attempts per step before the pivot, then retries
within the policy's budget (24 h). The saga input is ids only (:class:`RefundInput`); amounts
and provider ids are read from the rows, secrets never appear. The pivot's output is a
:class:`ProviderRefundResult`, the wait's a :class:`FinalRefund`; later steps read them with
``ctx.output(step, Type)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from cloudphone.billing import store
from cloudphone.billing.config import BillingConfig
from cloudphone.billing.models import (
    REFUNDABLE,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    payments,
    refunds,
)
from cloudphone.billing.providers.base import (
    PaymentProvider,
    ProviderError,
    ProviderRefund,
    ProviderRefused,
    ProviderRejected,
    ProviderUnknownOutcome,
    RefundState,
)
from cloudphone.billing.settlement import (
    order_follows_payment_txn,
    release_hold_txn,
    settle_refund_txn,
)
from cloudphone.saga import (
    Database,
    NonRetryableError,
    RetryLater,
    RetryPolicy,
    Saga,
    StepContext,
    StepKind,
)

REFUND_SAGA = "payment_refund"
"""Name of the saga type."""

SET_REFUNDING_STATUS = "SET_REFUNDING_STATUS"
CALL_PROVIDER_REFUND = "CALL_PROVIDER_REFUND"
AWAIT_PROVIDER_REFUND = "AWAIT_PROVIDER_REFUND"
UPDATE_PAYMENT_STATUS = "UPDATE_PAYMENT_STATUS"
UPDATE_ORDER_STATUS = "UPDATE_ORDER_STATUS"


class RefundInput(BaseModel):
    """The refund saga's input: ids only."""

    model_config = ConfigDict(frozen=True)

    refund_id: str
    payment_id: str
    order_id: str


class ProviderRefundResult(BaseModel):
    """What ``CALL_PROVIDER_REFUND`` (the pivot) learnt: the provider's refund."""

    provider: str
    provider_refund_id: str
    provider_refund_state: RefundState
    provider_failure_reason: str | None = None


class FinalRefund(BaseModel):
    """What ``AWAIT_PROVIDER_REFUND`` learnt: the provider's final answer.

    A run started before outputs were kept per step has only its merged data, where this
    step's answer overwrote the pivot's ``provider_refund_*`` keys: those are read then.
    """

    final_state: RefundState = Field(
        validation_alias=AliasChoices("final_state", "provider_refund_state")
    )
    final_failure_reason: str | None = Field(
        default=None,
        validation_alias=AliasChoices("final_failure_reason", "provider_failure_reason"),
    )


class RefundNotSent(Exception):
    """The provider could not be reached before the request was sent (retried)."""


class RefundOutcomeUnknown(Exception):
    """Whether the provider refunded is not known yet (retried; settled by asking)."""


@dataclass(frozen=True)
class RefundTiming:
    """Deadlines, retries and polling of the refund saga (defaults are the production ones)."""

    deadline: timedelta = timedelta(minutes=5)
    """Saga deadline; before the pivot, passing it compensates the saga."""

    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=4))
    """Retry policy of every step (4 attempts, 1 s doubling, full jitter)."""

    poll: timedelta = timedelta(seconds=5)
    """Wait between status checks of a refund the provider still processes."""

    provider_call_timeout: timedelta = timedelta(seconds=90)
    """Per-attempt timeout of the steps that call the provider (above the HTTP timeouts)."""

    verify_attempts: int = 4
    """Attempts the pivot's compensation makes to ask the provider before giving up."""

    @classmethod
    def from_config(cls, config: BillingConfig) -> RefundTiming:
        """Production timing with the intervals from the billing settings."""
        retry = RetryPolicy(max_attempts=4, initial_interval=config.refund_retry_initial_interval)
        return cls(retry=retry, poll=config.refund_poll_interval)


def build_refund_saga(
    providers: Mapping[str, PaymentProvider],
    db: Database,
    *,
    timing: RefundTiming | None = None,
    name: str = REFUND_SAGA,
) -> Saga[RefundInput]:
    """Build the refund saga wired to these ports.

    Args:
        providers: Payment providers by name (a payment names the one that charged it).
        db: The database holding the billing tables (the engine's).
        timing: Deadline, retries and polling; production defaults if None.
        name: Saga type name; tests give each test its own.
    """
    timing = timing or RefundTiming()
    steps = _RefundSteps(providers, db, timing)
    saga = Saga(name, input=RefundInput, timeout=timing.deadline, retry=timing.retry)
    calls = timing.provider_call_timeout
    hold = saga.step(SET_REFUNDING_STATUS, transactional=True)(steps.set_refunding)
    hold.compensate(transactional=True)(steps.release_hold)
    pivot = saga.step(CALL_PROVIDER_REFUND, kind=StepKind.PIVOT, timeout=calls)(steps.call_provider)
    pivot.compensate(transactional=False)(steps.verify_nothing_moved)
    saga.step(AWAIT_PROVIDER_REFUND, timeout=calls)(steps.await_final)
    saga.step(UPDATE_PAYMENT_STATUS, transactional=True)(steps.update_payment)
    saga.step(UPDATE_ORDER_STATUS, transactional=True)(steps.update_order)
    return saga


def cannot_hold(payment: Payment, refund: Refund) -> str | None:
    """Why this payment cannot be held for this refund now, or None if it can."""
    if payment.held_by_refund not in (None, refund.id):
        return f"payment {payment.id} is held by refund {payment.held_by_refund}"
    if payment.status not in REFUNDABLE:
        return f"payment {payment.id} is {payment.status}; only SUCCESS or PARTIALLY_REFUNDED"
    if refund.amount > payment.refundable_amount:
        return (
            f"refund of {refund.amount} exceeds the {payment.refundable_amount} "
            f"{payment.currency} left to refund on payment {payment.id}"
        )
    return None


@dataclass
class _RefundSteps:
    providers: Mapping[str, PaymentProvider]
    db: Database
    timing: RefundTiming

    # -- helpers ------------------------------------------------------------------------

    async def _load(self, refund_id: str) -> tuple[Any, Payment]:
        async with self.db.read() as conn:
            row = await store.refund_row_txn(conn, refund_id)
            if row is None:
                raise NonRetryableError(f"refund {refund_id} does not exist")
            payment = await store.payment_txn(conn, row["payment_id"])
        assert payment is not None  # foreign key
        return row, payment

    def _provider(self, payment: Payment) -> PaymentProvider:
        provider = self.providers.get(payment.provider)
        if provider is None:
            raise NonRetryableError(f"payment provider {payment.provider!r} is not configured")
        return provider

    async def _note(self, refund_id: str, **values: Any) -> None:
        """Record pivot bookkeeping in a transaction of its own (it must survive a crash)."""
        async with self.db.begin() as conn:
            await store.update_txn(conn, refunds, refund_id, **values)

    async def _needs_attention(self, refund_id: str, reason: str) -> NonRetryableError:
        await self._note(refund_id, status=RefundStatus.NEEDS_ATTENTION, failure_reason=reason)
        return NonRetryableError(reason)

    # -- SET_REFUNDING_STATUS -----------------------------------------------------------

    async def set_refunding(self, ctx: StepContext[RefundInput]) -> None:
        """Hold the payment for this refund (row lock; only refundable payments)."""
        conn = ctx.session
        refund = await store.refund_txn(conn, ctx.input.refund_id)
        if refund is None:
            raise NonRetryableError(f"refund {ctx.input.refund_id} does not exist")
        payment = await store.payment_txn(conn, refund.payment_id, lock=True)
        assert payment is not None  # foreign key
        if payment.held_by_refund == refund.id:
            return
        problem = cannot_hold(payment, refund)
        if problem is not None:
            raise NonRetryableError(problem)
        await store.update_txn(
            conn,
            payments,
            payment.id,
            status=PaymentStatus.REFUNDING,
            held_by_refund=refund.id,
            status_before_hold=payment.status,
        )

    async def release_hold(self, ctx: StepContext[RefundInput]) -> None:
        """Undo the hold (only this refund's) and mark the refund FAILED with the reason."""
        conn = ctx.session
        row = await store.refund_row_txn(conn, ctx.input.refund_id)
        if row is None:
            return
        refund = Refund.from_row(row)
        payment = await store.payment_txn(conn, refund.payment_id, lock=True)
        assert payment is not None
        if refund.status is RefundStatus.NEEDS_ATTENTION:
            raise NonRetryableError(refund.failure_reason or "refund needs an operator")
        held = payment.held_by_refund == refund.id
        reason = (
            row["last_provider_error"]
            or (None if held else cannot_hold(payment, refund))
            or _turned_back(ctx)
        )
        await release_hold_txn(conn, payment.id, refund.id, None)
        if refund.status in (RefundStatus.PENDING, RefundStatus.PROCESSING):
            await store.update_txn(
                conn, refunds, refund.id, status=RefundStatus.FAILED, failure_reason=reason
            )

    # -- CALL_PROVIDER_REFUND (pivot) ---------------------------------------------------

    async def call_provider(self, ctx: StepContext[RefundInput]) -> ProviderRefundResult:
        """Refund at the provider exactly once (see the module docstring)."""
        refund_id = ctx.input.refund_id
        row, payment = await self._load(refund_id)
        provider = self._provider(payment)
        charge = payment.provider_payment_id or ""
        if row["outcome_unknown"]:
            found = await self._look_up(provider, charge, refund_id)
            if found is not None:
                return _pivot_output(provider, found)
        await self._note(
            refund_id, outcome_unknown=True, provider_requests=refunds.c.provider_requests + 1
        )
        try:
            made = await provider.create_refund(
                charge_id=charge,
                refund_id=refund_id,
                amount=row["amount"],
                currency=row["currency"],
            )
        except ProviderRejected as error:
            await self._note(refund_id, outcome_unknown=False, last_provider_error=error.reason)
            raise NonRetryableError(f"the provider rejected the refund: {error.reason}") from None
        except ProviderRefused as error:
            await self._note(refund_id, outcome_unknown=False, last_provider_error=error.reason)
            raise RefundNotSent(error.reason) from None
        except ProviderUnknownOutcome as error:
            await self._note(refund_id, last_provider_error=error.reason)
            raise RefundOutcomeUnknown(error.reason) from None
        return _pivot_output(provider, made)

    async def _look_up(
        self, provider: PaymentProvider, charge: str, refund_id: str
    ) -> ProviderRefund | None:
        try:
            return await provider.find_refund(charge_id=charge, refund_id=refund_id)
        except ProviderError as error:
            await self._note(refund_id, last_provider_error=error.reason)
            raise RefundOutcomeUnknown(
                f"an earlier request's outcome is unknown and the provider could not be asked: "
                f"{error.reason}"
            ) from None

    async def verify_nothing_moved(self, ctx: StepContext[RefundInput]) -> None:
        """Compensation of the pivot: let the saga turn back only if no money moved."""
        refund_id = ctx.input.refund_id
        row, payment = await self._load(refund_id)
        if not row["outcome_unknown"]:
            return  # every request was answered "no": nothing to undo
        if row["status"] == RefundStatus.NEEDS_ATTENTION:
            raise NonRetryableError(row["failure_reason"])
        provider = self._provider(payment)
        try:
            found = await provider.find_refund(
                charge_id=payment.provider_payment_id or "", refund_id=refund_id
            )
        except ProviderError as error:
            if ctx.attempt < self.timing.verify_attempts:
                raise RefundOutcomeUnknown(f"cannot ask the provider yet: {error.reason}") from None
            raise await self._needs_attention(
                refund_id,
                f"refund outcome unknown: the provider did not answer ({error.reason}); "
                "the payment stays held until an operator checks the provider",
            ) from None
        if found is None:
            await self._note(refund_id, outcome_unknown=False)
            return
        raise await self._needs_attention(
            refund_id,
            f"refund {found.id} exists at the provider ({found.state}) but the saga could not "
            "record it in time; the payment stays held until an operator reconciles it",
        )

    # -- after the pivot ----------------------------------------------------------------

    async def await_final(self, ctx: StepContext[RefundInput]) -> FinalRefund:
        """Poll a refund the provider still processes until it is final."""
        taken = ctx.output(CALL_PROVIDER_REFUND, ProviderRefundResult)
        if taken.provider_refund_state is not RefundState.PENDING:
            return FinalRefund(
                final_state=taken.provider_refund_state,
                final_failure_reason=taken.provider_failure_reason,
            )
        provider = self.providers.get(taken.provider)
        if provider is None:
            raise NonRetryableError(f"payment provider {taken.provider!r} is gone")
        try:
            refund = await provider.get_refund(taken.provider_refund_id)
        except ProviderRejected as error:
            raise NonRetryableError(f"the provider lost the refund: {error.reason}") from None
        if refund.state is RefundState.PENDING:
            async with self.db.begin() as conn:
                await conn.execute(
                    sa.update(refunds)
                    .where(refunds.c.id == ctx.input.refund_id, refunds.c.status == "PENDING")
                    .values(status=RefundStatus.PROCESSING, provider_refund_id=refund.id)
                )
            raise RetryLater("the provider is still processing the refund", self.timing.poll)
        return FinalRefund(final_state=refund.state, final_failure_reason=refund.failure_reason)

    async def update_payment(self, ctx: StepContext[RefundInput]) -> dict[str, Any] | None:
        """Record the provider's final answer on the payment and the refund."""
        final = ctx.output(AWAIT_PROVIDER_REFUND, FinalRefund)
        return await settle_refund_txn(
            ctx.session,
            ctx.input.refund_id,
            provider_refund_id=ctx.output(CALL_PROVIDER_REFUND)["provider_refund_id"],
            succeeded=final.final_state is RefundState.SUCCEEDED,
            failure_reason=final.final_failure_reason,
        )

    async def update_order(self, ctx: StepContext[RefundInput]) -> None:
        """The order follows the payment (PARTIALLY_REFUNDED, REFUNDED)."""
        await order_follows_payment_txn(ctx.session, ctx.input.payment_id)


_CAUSES = {"timed_out": "its deadline passed", "cancelled": "it was cancelled"}


def _turned_back(ctx: StepContext[RefundInput]) -> str:
    """Why the saga stopped before the provider took the refund, from the engine's context."""
    cause = _CAUSES.get(ctx.compensation_cause or "", "a step failed")
    error = f" ({ctx.error})" if ctx.error is not None else ""
    return f"the refund saga stopped before the provider took the refund: {cause}{error}"


def _pivot_output(provider: PaymentProvider, refund: ProviderRefund) -> ProviderRefundResult:
    return ProviderRefundResult(
        provider=provider.name,
        provider_refund_id=refund.id,
        provider_refund_state=refund.state,
        provider_failure_reason=refund.failure_reason,
    )
