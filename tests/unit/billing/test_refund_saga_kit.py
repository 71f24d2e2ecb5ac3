"""The refund saga's compensation paths on the test kit: no engine database, a manual clock.

Each failure before or at the pivot must leave the payment SUCCESS and the refund FAILED with
its reason; a crash around the pivot must never refund twice; a deadline before the pivot
undoes the hold, after it only gets recorded.
"""

from __future__ import annotations

from datetime import timedelta

from cloudphone.billing.config import SandboxConfig
from cloudphone.billing.refund import (
    AWAIT_PROVIDER_REFUND,
    CALL_PROVIDER_REFUND,
    SET_REFUNDING_STATUS,
)
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaRun, SagaStatus
from cloudphone.saga.testing import MemoryEngine
from tests.support.billing_harness import Billing


def kit(billing: Billing) -> MemoryEngine:
    assert isinstance(billing.engine, MemoryEngine)
    return billing.engine


async def start_refund(
    billing: Billing, user: Principal, provider: SandboxConfig | None = None
) -> tuple[str, str]:
    """Pay 50.00 EUR, set the provider's fault knobs, ask for a full refund.

    Returns:
        The saga id and the refund id.
    """
    payment = await billing.paid_payment(user, 5000)
    if provider is not None:
        billing.sandbox.faults = provider
    requested = await billing.service.request_refund(user, payment.id, amount=5000)
    return requested.saga_id, requested.refund.id


async def assert_undone(billing: Billing, user: Principal, run: SagaRun, refund_id: str) -> str:
    """Payment back to SUCCESS and unheld, no money moved, refund FAILED; returns the reason."""
    refund = await billing.service.get_refund(user, refund_id)
    payment = await billing.service.get_payment(user, refund.payment_id)
    assert (payment.status, payment.held_by_refund, payment.refunded_amount) == ("SUCCESS", None, 0)
    assert await billing.sandbox.refunds_of(payment.provider_payment_id or "") == []
    assert refund.status == "FAILED"
    events = await billing.history(run.id)
    undone = [e.step for e in events if e.kind is EventKind.COMPENSATION_SUCCEEDED]
    assert undone[-1] == SET_REFUNDING_STATUS, "the hold was not released"
    return refund.failure_reason or ""


async def assert_refunded_once(billing: Billing, user: Principal, refund_id: str) -> None:
    refund = await billing.service.get_refund(user, refund_id)
    payment = await billing.service.get_payment(user, refund.payment_id)
    at_provider = await billing.sandbox.refunds_of(payment.provider_payment_id or "")
    assert [r.id for r in at_provider] == [refund.provider_refund_id], "refunded twice, or never"
    assert (refund.status, payment.status, payment.held_by_refund) == (
        "SUCCEEDED",
        "REFUNDED",
        None,
    )
    assert (await billing.service.get_order(user, payment.order_id)).status == "REFUNDED"


async def test_a_refund_completes(billing: Billing, user: Principal) -> None:
    async with kit(billing).worker():
        saga_id, refund_id = await start_refund(billing, user)
        run = await billing.engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    await assert_refunded_once(billing, user, refund_id)


async def test_hold_failing_every_attempt_compensates(billing: Billing, user: Principal) -> None:
    engine = kit(billing)
    engine.faults.fail(SET_REFUNDING_STATUS, times=None, error=ConnectionError("db blip"))
    async with engine.worker():
        saga_id, refund_id = await start_refund(billing, user)
        await engine.advance(timedelta(seconds=30))  # 1 s, 2 s, 4 s between the 4 attempts
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert engine.faults.attempts(SET_REFUNDING_STATUS) == 4
    reason = await assert_undone(billing, user, run, refund_id)
    assert reason.endswith("a step failed (ConnectionError in SET_REFUNDING_STATUS: db blip)")


async def test_provider_unreachable_at_the_pivot_compensates(
    billing: Billing, user: Principal
) -> None:
    engine = kit(billing)
    async with engine.worker():
        saga_id, refund_id = await start_refund(
            billing, user, SandboxConfig(refuse_connections=True)
        )
        await engine.advance(timedelta(seconds=30))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPENSATED
    assert engine.faults.attempts(CALL_PROVIDER_REFUND) == 4
    assert "connection refused" in await assert_undone(billing, user, run, refund_id)


async def test_provider_rejecting_the_pivot_compensates_at_once(
    billing: Billing, user: Principal
) -> None:
    engine = kit(billing)
    payment = await billing.paid_payment(user, 5000)
    # Someone refunded most of the charge at the provider directly: the pivot is refused.
    await billing.sandbox.create_refund(
        charge_id=payment.provider_payment_id or "",
        refund_id="outside",
        amount=4000,
        currency="EUR",
    )
    async with engine.worker():
        requested = await billing.service.request_refund(user, payment.id, amount=5000)
        run = await engine.wait(requested.saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    assert engine.faults.attempts(CALL_PROVIDER_REFUND) == 1, "a rejection was retried"
    refund = await billing.service.get_refund(user, requested.refund.id)
    assert refund.status == "FAILED"
    assert "amount_too_large" in (refund.failure_reason or "")
    paid = await billing.service.get_payment(user, payment.id)
    assert (paid.status, paid.held_by_refund) == ("SUCCESS", None)


async def test_crash_before_the_pivot_is_taken_over_and_refunds_once(
    billing: Billing, user: Principal
) -> None:
    engine = kit(billing)
    engine.crash_at(CALL_PROVIDER_REFUND, "before")
    async with engine.worker():
        saga_id, refund_id = await start_refund(billing, user)
        await engine.settle()
        assert (await billing.service.get_refund(user, refund_id)).status == "PENDING"
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    await assert_refunded_once(billing, user, refund_id)
    takeovers = [e for e in await billing.history(saga_id) if e.kind is EventKind.LEASE_TAKEOVER]
    assert [(e.step, e.attempt) for e in takeovers] == [(CALL_PROVIDER_REFUND, 2)]


async def test_crash_after_the_provider_took_the_money_never_refunds_twice(
    billing: Billing, user: Principal
) -> None:
    """The provider refunded, the worker died before recording it; the next one finds it.

    The sandbox here creates a new refund on every call (like localstripe): only the saga's
    own lookup stands between a takeover and a second refund.
    """
    engine = kit(billing)
    engine.crash_at(CALL_PROVIDER_REFUND, "after")
    async with engine.worker():
        saga_id, refund_id = await start_refund(
            billing, user, SandboxConfig(ignore_idempotency_key=True)
        )
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    assert engine.faults.attempts(CALL_PROVIDER_REFUND) == 2, "the pivot ran once, then again"
    await assert_refunded_once(billing, user, refund_id)


async def test_crash_after_the_hold_rolls_it_back_and_holds_once(
    billing: Billing, user: Principal
) -> None:
    engine = kit(billing)
    engine.crash_at(SET_REFUNDING_STATUS, "after")
    async with engine.worker():
        saga_id, refund_id = await start_refund(billing, user)
        await engine.settle()
        payment = await billing.payment_row(
            (await billing.service.get_refund(user, refund_id)).payment_id
        )
        assert (payment["status"], payment["held_by_refund"]) == ("SUCCESS", None), (
            "half-written hold"
        )
        await engine.advance(engine.lease + timedelta(seconds=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    await assert_refunded_once(billing, user, refund_id)


async def test_deadline_before_the_pivot_undoes_the_hold(billing: Billing, user: Principal) -> None:
    engine = kit(billing)
    engine.faults.hang(SET_REFUNDING_STATUS)
    async with engine.worker():
        saga_id, refund_id = await start_refund(billing, user)
        await engine.advance(timedelta(minutes=5))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.TIMED_OUT
    reason = await assert_undone(billing, user, run, refund_id)
    assert "stopped before the provider took the refund: its deadline passed" in reason


async def test_deadline_after_the_pivot_is_recorded_and_the_refund_finishes(
    billing: Billing, user: Principal
) -> None:
    """A refund the provider processes slowly outlives the deadline: it still completes."""
    engine = kit(billing)
    async with engine.worker():
        # Final after 80 status checks, one every 5 s: well past the 5-minute deadline.
        saga_id, refund_id = await start_refund(billing, user, SandboxConfig(pending_polls=80))
        await engine.advance(timedelta(minutes=6))
        assert (await billing.service.get_refund(user, refund_id)).status == "PROCESSING"
        assert (await engine.get(saga_id)).deadline_noted is False, "noted before a step ended"
        await engine.advance(timedelta(minutes=1))
        run = await engine.get(saga_id)
    assert run.status is SagaStatus.COMPLETED
    events = await billing.history(saga_id)
    postponed = [e for e in events if e.kind is EventKind.STEP_POSTPONED]
    assert {e.step for e in postponed} == {AWAIT_PROVIDER_REFUND}
    assert EventKind.DEADLINE_PASSED in {e.kind for e in events}
    await assert_refunded_once(billing, user, refund_id)
