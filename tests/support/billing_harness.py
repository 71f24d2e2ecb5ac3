"""Billing wired for tests: one database, the sandbox (and optionally Stripe), fast timings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from cloudphone.billing.models import Payment, payments, refunds
from cloudphone.billing.providers.base import PaymentProvider
from cloudphone.billing.providers.sandbox import SandboxProvider
from cloudphone.billing.refund import RefundTiming, build_refund_saga
from cloudphone.billing.service import BillingService, create_billing_schema
from cloudphone.domain import Principal, Role
from cloudphone.saga import Database, RetryPolicy, SagaEngine, SagaEvent, SagaRun
from cloudphone.saga.store.tables import saga_runs

FAST_TIMING = RefundTiming(
    retry=RetryPolicy(
        max_attempts=4,
        initial_interval=timedelta(milliseconds=10),
        max_interval=timedelta(milliseconds=50),
        jitter=False,
    ),
    poll=timedelta(milliseconds=20),
    provider_call_timeout=timedelta(seconds=20),
)
"""Production shape (4 attempts, 5-minute deadline) with millisecond waits."""

ADMIN = Principal("admin-1", Role.ADMIN)


@dataclass
class Billing:
    """A billing service, its engine and its sandbox on one test database."""

    db: Database
    engine: SagaEngine
    service: BillingService
    sandbox: SandboxProvider
    saga_name: str

    async def paid_payment(
        self, user: Principal, amount: int = 5000, currency: str = "EUR", provider: str = "sandbox"
    ) -> Payment:
        """An order of ``amount`` paid at ``provider``."""
        order = await self.service.create_order(
            user, amount=amount, currency=currency, description="cloud phone, 1 month"
        )
        payment = await self.service.pay_order(user, order.id, provider=provider)
        assert payment.status == "SUCCESS", payment
        return payment

    async def refund_and_wait(
        self, user: Principal, payment_id: str, amount: int, **kwargs: Any
    ) -> tuple[SagaRun, str]:
        """Request a refund and wait for its saga to end; returns the run and the refund id."""
        requested = await self.service.request_refund(user, payment_id, amount=amount, **kwargs)
        run = await self.engine.wait(requested.saga_id, timeout=timedelta(seconds=30))
        return run, requested.refund.id

    async def close(self) -> None:
        """Close the providers and the database."""
        for provider in self.service.providers.values():
            await provider.close()
        await self.engine.close()
        await self.db.dispose()

    async def history(self, saga_id: str) -> list[SagaEvent]:
        """The run's events."""
        return await self.engine.history(saga_id)

    async def counts(self, payment_id: str) -> dict[str, int]:
        """Rows written: refunds of the payment, and runs of this test's refund saga."""
        async with self.db.read() as conn:
            n_refunds = await conn.scalar(
                sa.select(sa.func.count()).where(refunds.c.payment_id == payment_id)
            )
            n_runs = await conn.scalar(
                sa.select(sa.func.count()).where(saga_runs.c.saga_type == self.saga_name)
            )
        return {"refunds": int(n_refunds or 0), "sagas": int(n_runs or 0)}

    async def payment_row(self, payment_id: str) -> dict[str, Any]:
        """The raw payment row (hold columns included)."""
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(payments).where(payments.c.id == payment_id)))
                .mappings()
                .one()
            )
        return dict(row)


async def build_billing(
    database_url: str,
    unique: str,
    *,
    providers: Callable[[SandboxProvider], Mapping[str, PaymentProvider]] | None = None,
    timing: RefundTiming = FAST_TIMING,
    **engine_options: Any,
) -> Billing:
    """Wire billing on ``database_url``.

    ``providers`` builds the provider map from the harness's sandbox (default: the sandbox
    alone), e.g. ``lambda sandbox: {"sandbox": ScriptedProvider(sandbox)}``.

    The saga gets a per-test name so runs left by other tests are never claimed here.
    """
    db = Database(database_url)
    sandbox = SandboxProvider(db)
    chosen = dict(providers(sandbox)) if providers is not None else {"sandbox": sandbox}
    name = f"payment_refund_{unique}"
    saga = build_refund_saga(chosen, db, timing=timing, name=name)
    options: dict[str, Any] = {
        "lease": timedelta(seconds=2),
        "poll_interval": timedelta(milliseconds=50),
        "worker_id": f"billing-{unique}",
        **engine_options,
    }
    engine = SagaEngine(db, [saga], **options)
    await engine.create_schema()
    await create_billing_schema(db)
    service = BillingService(engine, chosen, refund_saga=name)
    return Billing(db, engine, service, sandbox, name)
