"""Billing processes SIGKILLed in the middle of talking to the provider.

* The provider refunds, then the worker is SIGKILLed before recording it (PostgreSQL). After
  another worker takes the run over, exactly one refund exists at the provider and the payment
  ends REFUNDED — with the sandbox (told to ignore idempotency keys, like localstripe, so only
  the saga's lookup prevents a second refund) and with Stripe against localstripe.
* ``cloudphone serve`` is SIGKILLed during a payment (SQLite, Stripe behind a fault proxy that
  holds the call). Restarted, it settles the PENDING payment by itself: SUCCESS when Stripe
  charged, FAILED "no charge found" when the request never got there.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.billing.providers.stripe import StripeProvider
from cloudphone.domain import Principal
from cloudphone.saga import EventKind, SagaStatus
from tests.support.billing_harness import Billing, build_billing
from tests.support.billing_localstripe import API_KEY, LocalStripe
from tests.support.billing_stripe_proxy import StripeFaultProxy, stripe_proxy
from tests.support.billing_worker import BillingWorkers
from tests.support.server import CloudphoneProcess, auth, child_env, start_serve
from tests.support.waiting import eventually

__all__ = ["stripe_proxy"]  # fixture used below

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
    run = await starter.engine.wait(requested.saga_id, timeout=timedelta(seconds=30))

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


def stripe_env(workdir: Path, proxy: StripeFaultProxy) -> dict[str, str]:
    """``serve`` on SQLite paying with Stripe through the proxy; reconcile after 6 s untouched."""
    return child_env(
        workdir / "var",
        CLOUDPHONE_BILLING__PROVIDER="stripe",
        CLOUDPHONE_BILLING__STRIPE_API_KEY=API_KEY,
        CLOUDPHONE_BILLING__STRIPE_API_BASE=proxy.base,
        CLOUDPHONE_BILLING__STRIPE_TIMEOUT_SECONDS="5",
        CLOUDPHONE_BILLING__STRIPE_CONNECT_TIMEOUT_SECONDS="0.5",
        CLOUDPHONE_BILLING__PAYMENT_RECONCILE_AGE="PT6S",
        CLOUDPHONE_BILLING__PAYMENT_RECONCILE_INTERVAL="PT0.5S",
    )


def payment_of(workdir: Path, order_id: str) -> str:
    """The id of the order's payment, read from the server's SQLite file (nobody answered)."""
    with sqlite3.connect(workdir / "var" / "cloudphone.db") as db:
        [(payment_id,)] = db.execute("SELECT id FROM payments WHERE order_id = ?", (order_id,))
    return str(payment_id)


async def pay_and_kill(server: CloudphoneProcess, held: Any, order_id: str) -> None:
    """Pay the order; once the proxy holds the Stripe call, SIGKILL the server."""
    async with httpx.AsyncClient(base_url=str(server.base_url), timeout=30) as http:
        paying = asyncio.create_task(
            http.post(f"/orders/{order_id}/pay", json={}, headers=auth("carol"))
        )
        await asyncio.to_thread(held.wait)
        assert server.kill() == -signal.SIGKILL
        with pytest.raises(httpx.HTTPError):
            await paying


@pytest.mark.parametrize("charged", [True, False], ids=["charged", "never_sent"])
async def test_server_killed_during_a_payment_settles_it_after_restart(
    tmp_path: Path, stripe_proxy: StripeFaultProxy, localstripe: LocalStripe, charged: bool
) -> None:
    """SIGKILL mid-payment, restart: the PENDING payment settles by itself, nobody pays again."""
    env = stripe_env(tmp_path, stripe_proxy)
    server = start_serve(tmp_path, env)
    try:
        async with httpx.AsyncClient(base_url=str(server.base_url), timeout=10) as http:
            created = await http.post(
                "/orders",
                json={"amount": 1999, "currency": "EUR", "description": "phone"},
                headers=auth("carol"),
            )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        held = stripe_proxy.hold("POST", "/v1/payment_intents", after_forward=charged)
        await pay_and_kill(server, held, order_id)
    finally:
        server.stop()
    payment_id = payment_of(tmp_path, order_id)

    restarted = start_serve(tmp_path, env, name="restarted")
    try:
        async with httpx.AsyncClient(base_url=str(restarted.base_url), timeout=10) as http:

            async def payment() -> dict[str, Any]:
                answer = await http.get(f"/payments/{payment_id}", headers=auth("carol"))
                assert answer.status_code == 200, answer.text
                body: dict[str, Any] = answer.json()
                return body

            settled = await eventually(
                payment, lambda p: p["status"] != "PENDING", timeout=30, interval=0.2
            )
            order = (await http.get(f"/orders/{order_id}", headers=auth("carol"))).json()
    finally:
        restarted.stop()

    intents = await intents_for(localstripe, payment_id)
    if charged:
        assert settled["status"] == "SUCCESS", restarted.log()
        assert [settled["provider_payment_id"]] == intents
        assert "succeeded; SUCCESS" in settled["reconcile_note"]
        assert order["status"] == "PAID"
    else:
        assert settled["status"] == "FAILED", restarted.log()
        assert settled["failure_reason"].startswith("no charge found: stripe has no charge")
        assert intents == []
        assert order["status"] == "PENDING"  # payable again
    assert stripe_proxy.seen.count("POST /v1/payment_intents") == 1  # nobody paid again


async def intents_for(localstripe: LocalStripe, payment_id: str) -> list[str]:
    """Ids of the PaymentIntents localstripe holds for a payment."""
    stripe = StripeProvider(localstripe.config())
    try:
        page = await stripe._client.v1.payment_intents.list_async(params={"limit": 100})
        return [
            i.id
            async for i in page.auto_paging_iter()
            if i.metadata.to_dict().get("payment_id") == payment_id
        ]
    finally:
        await stripe.close()
