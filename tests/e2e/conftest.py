"""End-to-end fixtures: real ``cloudphone`` processes over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cloudphone.domain import Role
from tests.support.server import CloudphoneProcess, auth, child_env, start_serve


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudphoneProcess]:
    """``cloudphone serve`` (API + embedded worker) on the embedded SQLite default."""
    workdir = tmp_path_factory.mktemp("serve")
    server = start_serve(workdir, child_env(workdir / "var"))
    yield server
    server.stop()


@pytest.fixture
async def client(sqlite_server: CloudphoneProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the SQLite server (no credentials)."""
    async with httpx.AsyncClient(base_url=str(sqlite_server.base_url), timeout=10) as http:
        yield http


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers of an admin."""
    return auth("root", Role.ADMIN)


@pytest.fixture
def alice() -> dict[str, str]:
    """Headers of the user alice."""
    return auth("alice")


@pytest.fixture
def bob() -> dict[str, str]:
    """Headers of the user bob."""
    return auth("bob")
