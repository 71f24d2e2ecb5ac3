"""Fixtures of the engine's integration tests: the store contract's backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.stores import BACKENDS, Backend, open_backend


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Backend]:
    """Each contract test runs on the memory store, on SQLite and on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    async with open_backend(request.param, tmp_path, unique, url) as opened:
        yield opened
