"""Settings: embedded defaults, the generated JWT secret, errors naming the variable."""

from __future__ import annotations

import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from cloudphone.config import format_duration, parse_duration
from cloudphone.settings import (
    JWT_SECRET_FILE,
    Settings,
    SettingsError,
    ensure_secret_file,
    env_name,
    load_settings,
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


def duration_fields(
    model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """The location of every timedelta setting, in every section."""
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(duration_fields(annotation, (*prefix, name)))
        elif annotation is timedelta:
            found.append((*prefix, name))
    return found


def value_at(settings: Settings, location: tuple[str, ...]) -> object:
    value: object = settings
    for part in location:
        value = getattr(value, part)
    return value


def test_every_section_has_its_durations_found() -> None:
    """The walk below reaches the nested sections (a guard for the next test)."""
    found = {env_name(location) for location in duration_fields()}
    assert {
        "CLOUDPHONE_WORKER_LEASE",
        "CLOUDPHONE_APPS__TEMP_SWEEP_INTERVAL",
        "CLOUDPHONE_APPS__S3_READ_TIMEOUT",
        "CLOUDPHONE_BILLING__REFUND_POLL_INTERVAL",
        "CLOUDPHONE_BILLING__SANDBOX__LATENCY",
        "CLOUDPHONE_DEVICES__SWEEP_INTERVAL",
        "CLOUDPHONE_DEVICES__BOOT_TIMEOUT",
    } <= found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3s", timedelta(seconds=3)),
        ("3", timedelta(seconds=3)),
        ("1.5", timedelta(seconds=1.5)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("PT3S", timedelta(seconds=3)),
    ],
)
def test_every_duration_setting_reads_every_form(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta
) -> None:
    """Nested or not, a duration variable takes units, plain seconds and ISO 8601 alike."""
    # The reconcile age must exceed the Stripe timeouts (a validator): it cannot share their
    # value, so it reads its own (a form of the same Duration type).
    age = "CLOUDPHONE_BILLING__PAYMENT_RECONCILE_AGE"
    locations = [loc for loc in duration_fields() if env_name(loc) != age]
    for location in locations:
        monkeypatch.setenv(env_name(location), text)
    monkeypatch.setenv(age, "1d")
    settings = load_settings()
    assert settings.billing.payment_reconcile_age == timedelta(days=1)
    assert {env_name(loc): value_at(settings, loc) for loc in locations} == {
        env_name(loc): expected for loc in locations
    }


def test_milliseconds_reach_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """``250ms`` in a section, where the ISO-only parser refused it."""
    monkeypatch.setenv("CLOUDPHONE_APPS__TEMP_SWEEP_INTERVAL", "250ms")
    monkeypatch.setenv("CLOUDPHONE_DEVICES__SWEEP_INTERVAL", "0")
    settings = load_settings()
    assert settings.apps.temp_sweep_interval == timedelta(milliseconds=250)
    assert settings.devices.sweep_interval == timedelta(0)


def test_a_bad_nested_duration_names_its_variable_and_the_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong duration says which variable and what a duration looks like."""
    monkeypatch.setenv("CLOUDPHONE_BILLING__STRIPE_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match=r"CLOUDPHONE_BILLING__STRIPE_TIMEOUT.*250ms, 3s"):
        load_settings()


@pytest.mark.parametrize("value", ["99999999999d", 1e300, float("inf")])
def test_a_duration_past_any_timedelta_is_refused_not_a_crash(value: object) -> None:
    """Too long for a duration, written or as a number: a settings error, not an OverflowError."""
    with pytest.raises(SettingsError, match=r"SWEEP_INTERVAL.*longer than any duration"):
        load_settings(devices={"sweep_interval": value})


def test_no_setting_counts_seconds_or_milliseconds_in_a_number() -> None:
    """Durations are Duration fields, not floats named ``*_seconds`` or ints named ``*_ms``."""

    def names(model: type[BaseModel], prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found.extend(names(annotation, f"{prefix}{name}."))
            else:
                found.append(prefix + name)
        return found

    assert [n for n in names(Settings) if n.endswith(("_seconds", "_ms", "_secs"))] == []


@pytest.mark.parametrize(
    ("old", "value", "location", "expected"),
    [
        ("CLOUDPHONE_DEVICES__BOOT_TIMEOUT_SECONDS", "12.5", ("devices", "boot_timeout"), 12.5),
        (
            "CLOUDPHONE_DEVICES__RUNTIME_CALL_TIMEOUT_SECONDS",
            "7",
            ("devices", "runtime_call_timeout"),
            7,
        ),
        (
            "CLOUDPHONE_DEVICES__RETRY_INITIAL_SECONDS",
            "0.5",
            ("devices", "retry_initial_interval"),
            0.5,
        ),
        ("CLOUDPHONE_DEVICES__SWEEP_INTERVAL_SECONDS", "0", ("devices", "sweep_interval"), 0),
        ("CLOUDPHONE_BILLING__STRIPE_TIMEOUT_SECONDS", "9", ("billing", "stripe_timeout"), 9),
        (
            "CLOUDPHONE_BILLING__STRIPE_CONNECT_TIMEOUT_SECONDS",
            "2",
            ("billing", "stripe_connect_timeout"),
            2,
        ),
        ("CLOUDPHONE_BILLING__REFUND_POLL_SECONDS", "3", ("billing", "refund_poll_interval"), 3),
        (
            "CLOUDPHONE_BILLING__REFUND_RETRY_INITIAL_SECONDS",
            "0.25",
            ("billing", "refund_retry_initial_interval"),
            0.25,
        ),
        (
            "CLOUDPHONE_BILLING__SANDBOX__LATENCY_MS",
            "250",
            ("billing", "sandbox", "latency"),
            0.25,
        ),
    ],
)
def test_renamed_variables_still_work_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    value: str,
    location: tuple[str, ...],
    expected: float,
) -> None:
    """The old ``*_seconds``/``*_ms`` names are deprecated aliases, in their old units."""
    monkeypatch.setenv(old, value)
    with pytest.warns(FutureWarning, match=f"{old} is deprecated.*use {env_name(location)}"):
        settings = load_settings()
    assert value_at(settings, location) == timedelta(seconds=expected)


def test_the_new_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both given: the current variable is used."""
    monkeypatch.setenv("CLOUDPHONE_DEVICES__BOOT_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("CLOUDPHONE_DEVICES__BOOT_TIMEOUT", "2m")
    with pytest.warns(FutureWarning):
        settings = load_settings()
    assert settings.devices.boot_timeout == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=12), "12h"),
        (timedelta(days=7), "7d"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1.5), "1500ms"),
    ],
)
def test_durations_print_the_way_they_are_written(value: timedelta, text: str) -> None:
    """``config show`` prints durations in the form the variables take."""
    assert format_duration(value) == text
    assert parse_duration(text) == value
