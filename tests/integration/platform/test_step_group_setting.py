"""CLOUDPHONE_WORKER_STEP_GROUP and _CARRY_PLAIN_STEPS reach the engine the platform builds."""

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


@pytest.mark.parametrize(("value", "carry"), [(None, True), ("false", False), ("true", True)])
async def test_the_carry_setting_reaches_the_engine(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, value: str | None, carry: bool
) -> None:
    """On by default; ``false`` writes every plain step's success on its own."""
    if value is not None:
        monkeypatch.setenv("CLOUDPHONE_WORKER_CARRY_PLAIN_STEPS", value)
    platform = build_platform(make_settings(), with_worker=False)
    try:
        assert platform.engine.carry_plain_steps is carry
    finally:
        await platform.close()


def test_the_carry_setting_must_be_a_boolean(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDPHONE_WORKER_CARRY_PLAIN_STEPS", "sometimes")
    with pytest.raises(SettingsError, match="CLOUDPHONE_WORKER_CARRY_PLAIN_STEPS"):
        make_settings()
