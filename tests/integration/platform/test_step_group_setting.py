"""CLOUDPHONE_WORKER_STEP_GROUP reaches the engine the platform builds."""

from __future__ import annotations

from typing import Any

import pytest

from cloudphone.platform import build_platform
from cloudphone.saga.store.sql import SqlStore
from cloudphone.settings import SettingsError


async def test_the_step_group_setting_reaches_the_engine(
    make_settings: Any, platform_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the store groups at most that many steps; SQLite has no groups."""
    monkeypatch.setenv("CLOUDPHONE_WORKER_STEP_GROUP", "4")
    platform = build_platform(make_settings(), with_worker=False)
    try:
        store = platform.engine.store
        assert isinstance(store, SqlStore)
        if platform_url.startswith("sqlite"):
            assert store.step_groups is None
        else:
            assert store.step_groups is not None
            assert store.step_groups.size == 4
    finally:
        await platform.close()


def test_the_step_group_must_be_positive(make_settings: Any) -> None:
    """Zero is refused with the variable's name (1 turns groups off)."""
    with pytest.raises(SettingsError, match="CLOUDPHONE_WORKER_STEP_GROUP"):
        make_settings(worker_step_group=0)
