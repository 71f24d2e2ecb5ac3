"""A process started while its database is down waits for it (``startup_wait``), then runs.

A supervisor that brings a killed worker back during a PostgreSQL restart must not see it exit.
Runs on a private cluster (``tests.support.postgres_server``), never the shared server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from cloudphone.platform import build_platform
from cloudphone.saga import SagaStatus
from cloudphone.settings import Settings, load_settings
from tests.support.postgres_server import PostgresServer, private_postgres
from tests.support.server import TEST_SECRET
from tests.support.waiting import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    """A private cluster the tests stop and start."""
    with private_postgres() as server:
        yield server


def settings_on(cluster: PostgresServer, tmp_path: Path, unique: str, wait: timedelta) -> Settings:
    """Settings of a platform with a worker on a fresh database of ``cluster``."""
    return load_settings(
        data_dir=tmp_path / "var",
        database_url=cluster.create_database(f"startup_{unique}"),
        jwt_secret=TEST_SECRET,
        worker_id=f"w-{unique}",
        worker_poll_interval=timedelta(milliseconds=50),
        shutdown_grace=timedelta(seconds=5),
        startup_wait=wait,
    )


async def test_a_start_during_an_outage_waits_for_the_database_then_runs_sagas(
    cluster: PostgresServer, tmp_path: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Server down at start: one warning; once it is up, migrated, claimed and running sagas."""
    settings = settings_on(cluster, tmp_path, unique, timedelta(seconds=60))
    caplog.set_level(logging.INFO, logger="cloudphone.platform")
    platform = build_platform(settings, with_worker=True)

    async def waiting_logged() -> bool:
        return "waiting for it" in caplog.text

    cluster.stop()
    try:
        starting = asyncio.create_task(platform.start())
        await eventually(waiting_logged, bool, timeout=20, what="the start-up's waiting line")
        assert not starting.done()
        await asyncio.to_thread(cluster.start)
        await asyncio.wait_for(starting, timeout=30)
        saga_id = await platform.engine.start("demo", {"message": "after the outage"})
        run = await platform.engine.wait(saga_id, timeout=timedelta(seconds=20))
        assert run.status is SagaStatus.COMPLETED
        assert platform.deployment is not None
    finally:
        if not cluster.alive:
            await asyncio.to_thread(cluster.start)
        await platform.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "cloudphone.platform"]
    assert messages.count("database unavailable at start-up; waiting for it") == 1
    assert "database reachable; starting" in messages


async def test_past_startup_wait_the_start_fails_with_the_database_error(
    cluster: PostgresServer, tmp_path: Path, unique: str
) -> None:
    """With the server still down after ``startup_wait``, the start gives up (no endless wait)."""
    settings = settings_on(cluster, tmp_path, unique, timedelta(milliseconds=500))
    platform = build_platform(settings, with_worker=True)
    cluster.stop()
    try:
        with pytest.raises(sa_exc.OperationalError, match="refused"):
            await asyncio.wait_for(platform.start(), timeout=30)
        assert platform.worker is None
    finally:
        await asyncio.to_thread(cluster.start)
        await platform.close()


async def test_a_database_that_refuses_the_role_fails_at_once(
    cluster: PostgresServer, tmp_path: Path, unique: str
) -> None:
    """A wrong role is not an outage: no waiting out ``startup_wait``."""
    settings = settings_on(cluster, tmp_path, unique, timedelta(seconds=60))
    wrong = settings.database_url.replace("postgres@", f"nobody_{unique}@", 1)
    platform = build_platform(settings.model_copy(update={"database_url": wrong}), with_worker=True)
    try:
        with pytest.raises(sa_exc.OperationalError, match="does not exist"):
            await asyncio.wait_for(platform.start(), timeout=10)
    finally:
        await platform.close()
