"""The provider refunds, then the worker is SIGKILLed before recording it (PostgreSQL).

After another worker takes the run over, exactly one refund exists at the provider and the
payment ends REFUNDED — with the sandbox (told to ignore idempotency keys, like localstripe, so
only the saga's lookup prevents a second refund) and with Stripe against localstripe.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudphone.billing.providers.stripe import StripeProvider
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaStatus
from tests.support.billing_harness import Billing, build_billing
from tests.support.billing_localstripe import LocalStripe
from tests.support.billing_worker import BillingWorkers

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    server = LocalStripe(log_path=tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def starter(
    postgres_url: str, unique: str, localstripe: LocalStripe
) -> AsyncIterator[Billing]:
    """The test's own wiring (no worker): pays, requests refunds, reads results."""
    stripe = StripeProvider(localstripe.config())
    billing = await build_billing(
        postgres_url, unique, providers=lambda sandbox: {"sandbox": sandbox, "stripe": stripe}
    )
    yield billing
    await billing.close()


@pytest.fixture
def workers(
    tmp_path: Path, postgres_url: str, starter: Billing, localstripe: LocalStripe
) -> Iterator[BillingWorkers]:
    """Workers wired like the starter, the sandbox ignoring idempotency keys; all SIGKILLed."""
    pool = BillingWorkers(
        tmp_path,
        postgres_url,
        starter.saga_name,
        stripe_base=localstripe.base,
        sandbox_ignore_idempotency=True,
    )
    yield pool
    pool.close()


@pytest.mark.parametrize("provider", ["sandbox", "stripe"])
async def test_crash_after_provider_refund_refunds_exactly_once(
    starter: Billing,
    workers: BillingWorkers,
    unique: str,
    provider: str,
) -> None:
    """SIGKILL between the provider's refund and its record: one refund, payment REFUNDED."""
    doomed = await workers.start(f"doomed-{unique}", crash_after=["CALL_PROVIDER_REFUND"])
    user = Principal(f"user-{unique}")
    payment = await starter.paid_payment(user, 6000, provider=provider)
    requested = await starter.service.request_refund(user, payment.id, amount=6000)

    code = await doomed.exited(within=30)
    assert code == -signal.SIGKILL, doomed.log()
    charge = payment.provider_payment_id or ""
    held = await starter.payment_row(payment.id)
    assert (held["status"], held["held_by_refund"]) == ("REFUNDING", requested.refund.id)
    assert len(await refunds_at(starter, provider, charge)) == 1  # the money already moved

    survivor = await workers.start(f"survivor-{unique}")
    run = await starter.engine.wait(requested.saga_id, timeout=30)

    assert run.status is SagaStatus.COMPLETED, survivor.log()
    events = await starter.history(run.id)
    assert EventKind.LEASE_TAKEOVER in {e.kind for e in events}
    assert EventKind.COMPENSATION_STARTED not in {e.kind for e in events}
    at_provider = await refunds_at(starter, provider, charge)
    assert len(at_provider) == 1
    paid = await starter.service.get_payment(user, payment.id)
    assert (paid.status, paid.refunded_amount) == ("REFUNDED", 6000)
    refund = await starter.service.get_refund(user, requested.refund.id)
    assert (refund.status, refund.provider_refund_id) == ("SUCCEEDED", at_provider[0])


async def refunds_at(billing: Billing, provider: str, charge: str) -> list[str]:
    """Ids of the refunds the provider holds for a charge."""
    if provider == "sandbox":
        return [r.id for r in await billing.sandbox.refunds_of(charge)]
    stripe = billing.service.providers["stripe"]
    assert isinstance(stripe, StripeProvider)
    page = await stripe._client.v1.refunds.list_async(params={"payment_intent": charge})
    return [r.id for r in page.data]
