"""Billing on the test kit: the refund saga on a MemoryEngine, its tables in a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.billing.providers.sandbox import SandboxProvider
from cloudphone.billing.refund import REFUND_SAGA, build_refund_saga
from cloudphone.billing.service import BillingService, create_billing_schema
from cloudphone.domain import Principal
from cloudphone.saga import Database
from cloudphone.saga.testing import MemoryEngine
from tests.support.billing_harness import Billing


@pytest.fixture
def user() -> Principal:
    return Principal("user-1")


@pytest.fixture
async def billing(tmp_path: Path) -> AsyncIterator[Billing]:
    """The production refund saga (timing included) on a manual clock; no engine database.

    The billing tables and the sandbox's ledger live in the business database the saga's
    transactional steps write through.
    """
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    await create_billing_schema(db)
    sandbox = SandboxProvider(db)
    providers = {"sandbox": sandbox}
    engine = MemoryEngine([build_refund_saga(providers, db)], database=db)
    wired = Billing(db, engine, BillingService(engine, providers), sandbox, REFUND_SAGA)
    yield wired
    await wired.close()
