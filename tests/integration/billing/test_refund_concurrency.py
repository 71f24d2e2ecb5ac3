"""50 concurrent refund requests on one payment, on PostgreSQL with a worker running."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloudphone.billing.models import IN_FLIGHT, refunds
from cloudphone.domain import ConflictError, InvalidInputError, Principal
from cloudphone.saga import SagaStatus
from tests.support.billing_harness import Billing, build_billing
from tests.support.billing_http import billing_client, headers

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_billing(postgres_url: str, unique: str) -> AsyncIterator[Billing]:
    billing = await build_billing(postgres_url, unique)
    yield billing
    await billing.close()


async def in_flight(billing: Billing, payment_id: str) -> int:
    async with billing.db.read() as conn:
        n = await conn.scalar(
            sa.select(sa.func.count()).where(
                refunds.c.payment_id == payment_id,
                refunds.c.status.in_([s.value for s in IN_FLIGHT]),
            )
        )
    return int(n or 0)


async def test_fifty_concurrent_refunds_never_overrefund_nor_500(
    pg_billing: Billing, unique: str
) -> None:
    """Every request is accepted or refused with 409/422; ≤ 1 in flight; refunded ≤ paid.

    The clients retry a 409 a few times, so several refunds go through and later ones run
    into the exhausted balance (422).
    """
    billing = pg_billing
    user = Principal(f"user-{unique}")
    payment = await billing.paid_payment(user, 5000)
    amounts = [100 + (i * 373) % 2400 for i in range(50)]
    seen_in_flight: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            seen_in_flight.append(await in_flight(billing, payment.id))
            await asyncio.sleep(0.002)

    async def request(amount: int) -> str:
        """A client that retries a 409 a few times, as a real one would."""
        code = ""
        for _ in range(20):
            try:
                done = await billing.service.request_refund(user, payment.id, amount=amount)
            except (ConflictError, InvalidInputError) as error:
                code = error.code
            else:
                return f"accepted:{done.saga_id}"
            if code != "refund_in_progress":
                return code
            await asyncio.sleep(0.01)  # the client's backoff, not a wait for the work
        return code

    async with billing.engine.worker(concurrency=8):
        sampler = asyncio.create_task(sample())
        outcomes = await asyncio.gather(*(request(a) for a in amounts))
        started = [o.split(":", 1)[1] for o in outcomes if o.startswith("accepted:")]
        runs = [
            await billing.engine.wait(saga_id, timeout=timedelta(seconds=30)) for saga_id in started
        ]
        stop.set()
        await sampler

    kinds = Counter(o.split(":", 1)[0] for o in outcomes)
    assert set(kinds) <= {
        "accepted",
        "refund_in_progress",
        "amount_exceeds_refundable",
        "payment_not_refundable",
    }
    assert kinds["accepted"] >= 2  # clients retrying got several refunds through
    assert all(run.status is SagaStatus.COMPLETED for run in runs)
    assert max(seen_in_flight) <= 1
    paid = await billing.service.get_payment(user, payment.id)
    done = await billing.service.list_refunds(user, payment.id)
    succeeded = sum(r.amount for r in done if r.status == "SUCCEEDED")
    assert succeeded == paid.refunded_amount <= paid.amount
    assert len(done) == kinds["accepted"]
    at_provider = await billing.sandbox.refunds_of(paid.provider_payment_id or "")
    assert sum(r.amount for r in at_provider) == succeeded


async def test_fifty_concurrent_http_refund_requests_are_202_or_409(
    pg_billing: Billing, unique: str, tmp_path: Path
) -> None:
    """Over HTTP: 50 at once on one payment → one 202, the rest 409; never a 5xx."""
    billing = pg_billing
    user = Principal(f"user-{unique}")
    payment = await billing.paid_payment(user, 5000)
    who = headers(user.user_id)
    url = f"/payments/{payment.id}/refunds"
    async with billing_client(billing, tmp_path / "var") as client:
        responses = await asyncio.gather(
            *(client.post(url, json={"amount": 100 + i * 37}, headers=who) for i in range(50))
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 1, 409: 49}, statuses
    assert all(
        r.json()["error"]["code"] == "refund_in_progress" for r in responses if r.status_code == 409
    )
    assert await billing.counts(payment.id) == {"refunds": 1, "sagas": 1}
