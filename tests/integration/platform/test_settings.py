"""Settings: embedded defaults, the generated JWT secret, errors naming the variable."""

from __future__ import annotations

import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from cloudphone.settings import (
    JWT_SECRET_FILE,
    Settings,
    SettingsError,
    ensure_secret_file,
    env_name,
    load_settings,
    parse_duration,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CLOUDPHONE_* from the outside; run in a scratch directory."""
    import os

    for name in list(os.environ):
        if name.startswith("CLOUDPHONE_") and not name.startswith("CLOUDPHONE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_default_is_embedded(tmp_path: Path) -> None:
    """With no environment: SQLite under ./var, sandbox payments, local files and devices."""
    settings = load_settings()
    assert settings.data_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'cloudphone.db'}"
    assert settings.is_sqlite
    assert settings.billing.provider == "sandbox"
    assert settings.apps.storage == "filesystem"
    assert settings.devices.runtime == "local"


def test_the_jwt_secret_is_generated_once_privately_and_never_shown(tmp_path: Path) -> None:
    """First load writes a 0600 secret file; later loads reuse it; repr and dumps hide it."""
    first = load_settings()
    path = tmp_path / "var" / JWT_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.jwt_secret is not None
    secret = first.jwt_secret.get_secret_value()
    assert len(secret) >= 32
    again = load_settings()
    assert again.jwt_secret is not None
    assert again.jwt_secret.get_secret_value() == secret
    assert secret not in repr(first)
    assert secret not in first.model_dump_json()


def test_processes_racing_for_the_secret_agree(tmp_path: Path) -> None:
    """Many starters at once end up with one secret."""
    path = tmp_path / "secret"
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(ensure_secret_file(path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_the_environment_configures_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUDPHONE_DATABASE_URL switches to PostgreSQL; __ reaches into sections."""
    monkeypatch.setenv("CLOUDPHONE_DATABASE_URL", "postgresql+asyncpg://u@db/cloudphone")
    monkeypatch.setenv("CLOUDPHONE_BILLING__PROVIDER", "stripe")
    monkeypatch.setenv("CLOUDPHONE_WORKER_LEASE", "45s")
    monkeypatch.setenv("CLOUDPHONE_SHUTDOWN_GRACE", "PT5S")
    monkeypatch.setenv("CLOUDPHONE_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert not settings.is_sqlite
    assert settings.billing.provider == "stripe"
    assert settings.worker_lease == timedelta(seconds=45)
    assert settings.shutdown_grace == timedelta(seconds=5)
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUDPHONE_PORT", "eighty"),
        ("CLOUDPHONE_PORT", "70000"),
        ("CLOUDPHONE_DATABASE_URL", "mysql://db/x"),
        ("CLOUDPHONE_WORKER_LEASE", "10ms"),
        ("CLOUDPHONE_WORKER_CONCURRENCY", "0"),
        ("CLOUDPHONE_LOG_FORMAT", "xml"),
        ("CLOUDPHONE_BILLING__PROVIDER", "paypal"),
        ("CLOUDPHONE_DEVICES__ADB_PORT_MIN", "80"),
    ],
)
def test_invalid_settings_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The message says which variable to fix."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", timedelta(seconds=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("250ms", timedelta(milliseconds=250)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
    ],
)
def test_durations_read_like_humans_write_them(text: str, expected: timedelta) -> None:
    """Env durations accept a unit suffix (or plain seconds)."""
    assert parse_duration(text) == expected


def test_env_names_follow_the_nesting() -> None:
    """Field locations map to CLOUDPHONE_ names with __ between sections."""
    assert env_name(("port",)) == "CLOUDPHONE_PORT"
    assert env_name(("billing", "stripe_api_key")) == "CLOUDPHONE_BILLING__STRIPE_API_KEY"


def test_settings_can_be_built_without_the_environment() -> None:
    """Keyword values win over the environment (the CLI's flags use this)."""
    settings = Settings(port=9999, data_dir=Path("/tmp/x"))
    assert settings.port == 9999
    assert settings.database_url.endswith("/tmp/x/cloudphone.db")
