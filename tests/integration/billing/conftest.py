"""Billing fixtures: users, billing wired on the test database, a localstripe server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from cloudphone.domain import Principal
from tests.support.billing_harness import Billing, build_billing
from tests.support.billing_localstripe import LocalStripe
from tests.support.billing_stripe_proxy import stripe_proxy

__all__ = ["stripe_proxy"]  # a fixture of the billing tests

MakeBilling = Callable[..., Awaitable[Billing]]


@pytest.fixture
def user(unique: str) -> Principal:
    return Principal(f"user-{unique}")


@pytest.fixture
def other_user(unique: str) -> Principal:
    return Principal(f"other-{unique}")


@pytest.fixture
async def make_billing(database_url: str, unique: str) -> AsyncIterator[MakeBilling]:
    """Build billing (options as in ``build_billing``); everything is closed at the end."""
    built: list[Billing] = []

    async def make(**options: Any) -> Billing:
        billing = await build_billing(database_url, f"{unique}{len(built) or ''}", **options)
        built.append(billing)
        return billing

    yield make
    for billing in built:
        await billing.close()


@pytest.fixture
async def billing(make_billing: MakeBilling) -> Billing:
    """Billing with the sandbox provider (no worker running yet)."""
    return await make_billing()


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """A localstripe server for the session (127.0.0.1, free port), stopped by pid."""
    server = LocalStripe(log_path=tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    server.start()
    yield server
    server.stop()
