"""The billing API in-process over ASGI, on a test's own billing wiring."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx

from tests.support.asgi import SECRET, headers, service_client  # noqa: F401 - re-exported for tests
from tests.support.billing_harness import Billing


def billing_client(
    billing: Billing, data_dir: Path
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """An HTTP client on the real app, whose platform is this test's billing wiring."""
    return service_client(
        billing.db, billing.engine, data_dir, host="billing.test", billing=billing.service
    )
