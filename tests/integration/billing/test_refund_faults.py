"""Refunds when the provider misbehaves: refused, rejected, lost answers, unknown outcomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from cloudphone.billing.config import SandboxConfig
from cloudphone.billing.providers.base import ProviderUnknownOutcome
from cloudphone.billing.providers.sandbox import SandboxProvider
from cloudphone.billing.refund import CALL_PROVIDER_REFUND
from cloudphone.billing.testing import ScriptedProvider
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import EventKind, NonRetryableError, RetryPolicy, SagaEvent, SagaStatus
from cloudphone.saga.testing import FaultInjector
from tests.integration.billing.conftest import MakeBilling
from tests.support.billing_harness import ADMIN, FAST_TIMING, Billing


def pivot_failures(events: list[SagaEvent]) -> list[str]:
    return [
        e.detail["error"]["type"]
        for e in events
        if e.kind is EventKind.STEP_FAILED and e.step == CALL_PROVIDER_REFUND
    ]


async def test_provider_refusing_connections_compensates_to_success(
    billing: Billing, user: Principal
) -> None:
    """Refused for longer than the retries: COMPENSATED, payment SUCCESS, refund FAILED + reason."""
    payment = await billing.paid_payment(user, 5000)
    billing.sandbox.faults = SandboxConfig(refuse_connections=True)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.COMPENSATED
    assert pivot_failures(await billing.history(run.id)) == ["RefundNotSent"] * 4
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.refunded_amount, paid.held_by_refund) == ("SUCCESS", 0, None)
    refund = await billing.service.get_refund(user, refund_id)
    assert refund.status == "FAILED"
    assert "connection refused" in (refund.failure_reason or "")
    assert await billing.sandbox.refunds_of(paid.provider_payment_id or "") == []
    assert (await billing.service.get_order(user, payment.order_id)).status == "PAID"


async def test_provider_rejecting_the_refund_compensates_at_once(
    billing: Billing, user: Principal
) -> None:
    """A definitive rejection is not retried: one attempt, COMPENSATED, the reason kept."""
    payment = await billing.paid_payment(user, 5000)
    charge = payment.provider_payment_id or ""
    # Someone refunded most of the charge directly at the provider, behind billing's back.
    await billing.sandbox.create_refund(
        charge_id=charge, refund_id="outside", amount=4000, currency="EUR"
    )
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.COMPENSATED
    assert pivot_failures(await billing.history(run.id)) == ["NonRetryableError"]
    refund = await billing.service.get_refund(user, refund_id)
    assert refund.status == "FAILED"
    assert "amount_too_large" in (refund.failure_reason or "")
    assert (await billing.service.get_payment(user, payment.id)).status == "SUCCESS"
    assert len(await billing.sandbox.refunds_of(charge)) == 1


async def test_timeout_after_the_money_moved_is_settled_by_asking(
    billing: Billing, user: Principal
) -> None:
    """The answer is lost after the refund was taken: the next attempt finds it; no compensation."""
    payment = await billing.paid_payment(user, 5000)
    # Every creation "times out" after taking the money, and repeats are not deduplicated by
    # the provider (like localstripe): only the saga's lookup prevents a second refund.
    billing.sandbox.faults = SandboxConfig(
        timeout_after_refund_rate=1.0, ignore_idempotency_key=True
    )
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.COMPLETED
    events = await billing.history(run.id)
    assert pivot_failures(events) == ["RefundOutcomeUnknown"]
    assert EventKind.COMPENSATION_STARTED not in {e.kind for e in events}
    at_provider = await billing.sandbox.refunds_of(payment.provider_payment_id or "")
    assert len(at_provider) == 1
    refund = await billing.service.get_refund(user, refund_id)
    assert (refund.status, refund.provider_refund_id) == ("SUCCEEDED", at_provider[0].id)
    assert (await billing.service.get_payment(user, payment.id)).status == "REFUNDED"


async def test_unknown_outcome_that_persists_fails_with_payment_held(
    billing: Billing, user: Principal
) -> None:
    """The provider never answers: FAILED for an operator, payment still held, reason visible."""
    payment = await billing.paid_payment(user, 5000)
    billing.sandbox.faults = SandboxConfig(error_rate=1.0)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.FAILED
    assert run.error is not None
    assert "outcome unknown" in run.error.message
    row = await billing.payment_row(payment.id)
    assert (row["status"], row["held_by_refund"]) == ("REFUNDING", refund_id)
    refund = await billing.service.get_refund(user, refund_id)
    assert refund.status == "NEEDS_ATTENTION"
    assert "503" in (refund.failure_reason or "")
    events = await billing.history(run.id)
    undone = [e.step for e in events if e.kind is EventKind.COMPENSATION_SUCCEEDED]
    assert undone == []  # the hold was not released
    # Waiting would not help: another refund is refused, saying who must act.
    with pytest.raises(ConflictError) as blocked:
        await billing.service.request_refund(user, payment.id, amount=100)
    assert blocked.value.code == "refund_needs_attention"
    assert f"refund {refund_id} of payment {payment.id} needs attention" in blocked.value.message
    assert "an operator must reconcile it" in blocked.value.message

    # The provider answers again: an operator reconciles from what it says (nothing moved).
    billing.sandbox.faults = SandboxConfig()
    reconciled = await billing.service.reconcile_refund(ADMIN, refund_id)
    assert reconciled.status == "FAILED"
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.held_by_refund) == ("SUCCESS", None)
    resolved = await billing.engine.get(run.id)
    assert resolved.resolution is not None


async def test_refund_that_exists_while_lookups_fail_needs_an_operator(
    make_billing: MakeBilling, user: Principal
) -> None:
    """Money moved but the provider cannot be asked: FAILED + held; reconcile records REFUNDED."""
    scripted: list[ScriptedProvider] = []

    def providers(sandbox: SandboxProvider) -> dict[str, ScriptedProvider]:
        scripted.append(ScriptedProvider(sandbox))
        return {"sandbox": scripted[0]}

    billing = await make_billing(providers=providers)
    payment = await billing.paid_payment(user, 5000)
    billing.sandbox.faults = SandboxConfig(timeout_after_refund_rate=1.0)
    scripted[0].fail("find_refund", error=ProviderUnknownOutcome("lookup timed out"))
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.FAILED
    row = await billing.payment_row(payment.id)
    assert (row["status"], row["held_by_refund"]) == ("REFUNDING", refund_id)
    assert scripted[0].calls["create_refund"] == 1  # never re-sent while the outcome was open
    assert (await billing.service.get_refund(user, refund_id)).status == "NEEDS_ATTENTION"

    scripted[0].heal()
    reconciled = await billing.service.reconcile_refund(ADMIN, refund_id)
    assert reconciled.status == "SUCCEEDED"
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.refunded_amount) == ("REFUNDED", 5000)
    assert (await billing.service.get_order(user, payment.order_id)).status == "REFUNDED"


async def test_failure_after_the_pivot_never_returns_payment_to_success(
    make_billing: MakeBilling, user: Principal
) -> None:
    """A step after the pivot failing for good: FAILED, payment held (never SUCCESS), no undo."""
    faults = FaultInjector()
    faults.fail("UPDATE_PAYMENT_STATUS", times=3, error=RuntimeError("db blip"))
    faults.fail("UPDATE_PAYMENT_STATUS", times=None, error=NonRetryableError("row vanished"))
    billing = await make_billing(hooks=faults)
    payment = await billing.paid_payment(user, 5000)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.FAILED
    assert run.current_step == "UPDATE_PAYMENT_STATUS"
    events = await billing.history(run.id)
    assert EventKind.COMPENSATION_STARTED not in {e.kind for e in events}
    row = await billing.payment_row(payment.id)
    assert (row["status"], row["held_by_refund"]) == ("REFUNDING", refund_id)
    assert len(await billing.sandbox.refunds_of(payment.provider_payment_id or "")) == 1

    reconciled = await billing.service.reconcile_refund(ADMIN, refund_id)
    assert reconciled.status == "SUCCEEDED"
    assert (await billing.service.get_payment(user, payment.id)).status == "REFUNDED"


async def test_retried_failures_after_the_pivot_still_complete(
    make_billing: MakeBilling, user: Principal
) -> None:
    """Steps after the pivot retry past max_attempts until they succeed."""
    faults = FaultInjector()
    faults.fail("UPDATE_ORDER_STATUS", times=6, error=RuntimeError("db blip"))
    billing = await make_billing(hooks=faults)
    payment = await billing.paid_payment(user, 5000)
    async with billing.engine.worker():
        run, _ = await billing.refund_and_wait(user, payment.id, 1000)
    assert run.status is SagaStatus.COMPLETED
    assert faults.attempts("UPDATE_ORDER_STATUS") == 7
    assert (await billing.service.get_payment(user, payment.id)).status == "PARTIALLY_REFUNDED"


async def test_deadline_before_the_pivot_times_out_and_releases_the_payment(
    make_billing: MakeBilling, user: Principal
) -> None:
    """The provider refuses until the deadline passes: TIMED_OUT, payment SUCCESS again."""
    patient = RetryPolicy(
        max_attempts=1000,
        initial_interval=timedelta(milliseconds=20),
        max_interval=timedelta(milliseconds=20),
        jitter=False,
    )
    timing = replace(FAST_TIMING, deadline=timedelta(seconds=1), retry=patient)
    billing = await make_billing(timing=timing)
    payment = await billing.paid_payment(user, 5000)
    billing.sandbox.faults = SandboxConfig(refuse_connections=True)
    async with billing.engine.worker():
        run, refund_id = await billing.refund_and_wait(user, payment.id, 5000)
    assert run.status is SagaStatus.TIMED_OUT
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.held_by_refund) == ("SUCCESS", None)
    assert (await billing.service.get_refund(user, refund_id)).status == "FAILED"
