"""The devices API in-process over ASGI, on a test's own devices wiring."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx

from tests.support.asgi import SECRET, headers, service_client  # noqa: F401 - re-exported for tests
from tests.support.devices_stack import DeviceStack


def devices_client(
    stack: DeviceStack, data_dir: Path
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """An HTTP client on the real app, whose platform is this test's devices wiring."""
    return service_client(
        stack.db, stack.engine, data_dir, host="devices.test", devices=stack.service
    )
