"""One settings object for the whole platform, read from ``CLOUDPHONE_*`` environment variables.

Every default is an embedded one: a SQLite file and the other local backends under
``data_dir`` (``./var``), so ``cloudphone serve`` runs with nothing to install. Nested sections
use ``__``: ``CLOUDPHONE_BILLING__PROVIDER=stripe``. :func:`load_settings` turns validation
errors into a :class:`SettingsError` naming the offending variables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudphone.apps.config import AppsConfig
from cloudphone.billing.config import BillingConfig
from cloudphone.config import Duration, Section
from cloudphone.devices.config import DevicesConfig

ENV_PREFIX = "CLOUDPHONE_"
NESTED_DELIMITER = "__"
JWT_SECRET_FILE = "jwt_secret"
"""Name of the file under ``data_dir`` holding the generated JWT secret."""

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


class SettingsError(ValueError):
    """The settings are invalid; the message names each offending environment variable."""


OTEL_EXTRA = "pip install 'cloudphone[otel]'"
"""How to install what tracing needs (opentelemetry-api, -sdk, -instrumentation-fastapi)."""
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
"""The package of the OTLP/HTTP span exporter."""
_OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation.fastapi")
_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported (looks it up without importing it, nor fails)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing or blocked
        return False


class OtelConfig(Section):
    """OpenTelemetry tracing (env ``CLOUDPHONE_OTEL__*``): off by default, needs the otel extra."""

    enabled: bool = False
    """Trace HTTP requests and saga runs (a span per run drive, step attempt and
    compensation). Off, nothing of OpenTelemetry is even imported."""

    service_name: str = Field(default="cloudphone", min_length=1, max_length=200)
    """``service.name`` of this process's spans."""

    exporter: Literal["otlp", "console"] | None = None
    """``otlp`` (OTLP/HTTP to ``endpoint``; needs opentelemetry-exporter-otlp-proto-http) or
    ``console`` (one JSON object per span on stdout, or in ``console_file``). Default: otlp
    when that package is installed, else console."""

    endpoint: str | None = None
    """OTLP/HTTP traces URL, e.g. ``http://collector:4318/v1/traces``. Default: the
    exporter's own (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else localhost:4318)."""

    console_file: Path | None = None
    """The console exporter appends its JSON lines to this file instead of stdout."""

    export_delay: Duration = Field(default=timedelta(seconds=5), gt=timedelta(0))
    """Longest a finished span waits in memory before it is exported with others."""

    @field_validator("enabled")
    @classmethod
    def _otel_installed(cls, enabled: bool) -> bool:
        missing = [name for name in _OTEL_MODULES if enabled and not module_available(name)]
        if missing:
            raise ValueError(f"tracing is on but {missing[0]} is missing: {OTEL_EXTRA}")
        return enabled

    @field_validator("exporter")
    @classmethod
    def _exporter_installed(cls, exporter: str | None, info: ValidationInfo) -> str | None:
        if exporter == "otlp" and info.data.get("enabled") and not module_available(_OTLP_MODULE):
            raise ValueError(f"the otlp exporter needs {OTLP_PACKAGE}: pip install {OTLP_PACKAGE}")
        return exporter

    @model_validator(mode="after")
    def _default_exporter(self) -> OtelConfig:
        if self.enabled and self.exporter is None:
            self.exporter = "otlp" if module_available(_OTLP_MODULE) else "console"
        return self


class Settings(BaseSettings):
    """Everything the platform reads from its environment (``CLOUDPHONE_*``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="ignore",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    data_dir: Path = Path("var")
    """Where embedded backends keep their files (SQLite database, objects, secrets). It
    belongs to one database: the first start stamps it with the database's deployment id, and
    a deployment on another database refuses to start on it."""

    database_url: str = ""
    """SQLAlchemy async URL; default ``sqlite+aiosqlite:///<data_dir>/cloudphone.db``.
    Set ``postgresql+asyncpg://…`` to share one PostgreSQL between many processes."""

    db_pool_size: int = Field(default=10, ge=1, le=200)
    """Pooled PostgreSQL connections per process."""

    auto_migrate: bool = True
    """Apply pending migrations when ``serve`` or ``worker`` starts (``db upgrade`` by hand
    otherwise)."""

    startup_wait: Duration = Field(default=timedelta(seconds=60), ge=timedelta(0))
    """How long a starting ``serve`` or ``worker`` waits for an unreachable database (retrying
    with backoff) before it gives up; 0 gives up at once."""

    jwt_secret: SecretStr | None = None
    """HS256 signing secret of bearer tokens. Default: generated once and kept in
    ``<data_dir>/jwt_secret`` (mode 0600). Never logged."""

    jwt_issuer: str = "cloudphone"
    """``iss`` claim written into and required from tokens."""

    token_ttl: Duration = Field(default=timedelta(hours=12), gt=timedelta(0))
    """Default lifetime of tokens made by ``cloudphone token create``."""

    host: str = "127.0.0.1"
    """Address ``serve`` binds."""

    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``serve`` binds."""

    access_log: bool = True
    """Log one line per HTTP request."""

    demo: bool = True
    """Register the demo saga and its ``POST /demo`` route (a saga with fault knobs)."""

    worker_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Worker identity; a worker restarting with the same id takes its runs back at once.
    Default ``host-pid``."""

    worker_concurrency: int = Field(default=64, ge=1, le=10_000)
    """Runs one worker drives at once."""

    worker_lease: Duration = Field(default=timedelta(seconds=30), ge=timedelta(milliseconds=300))
    """How long a claim holds a run without renewal; a crashed worker's runs are taken over
    after it expires."""

    worker_poll_interval: Duration = Field(default=timedelta(seconds=1), gt=timedelta(0))
    """Longest an idle worker waits before looking for due runs again."""

    worker_step_group: int = Field(default=32, ge=1, le=1_000)
    """On PostgreSQL, most transactional steps of different runs that share one transaction
    under load (1: every step its own; see docs/engine.md, "Transactional steps share
    transactions under load")."""

    worker_carry_plain_steps: bool = True
    """Write a plain step's success in the transaction of the transactional step right after
    it instead of on its own (one write fewer; see docs/engine.md, "A plain step's success
    rides with the next transaction"). False: every step's success is its own write."""

    shutdown_grace: Duration = Field(default=timedelta(seconds=30), ge=timedelta(0))
    """On SIGTERM, how long running steps may take to finish before they are interrupted."""

    log_level: LogLevel = "info"
    """Lowest level logged."""

    log_format: LogFormat = "auto"
    """``json`` (one object per line), ``console`` (human), or ``auto``: console on a TTY."""

    billing: BillingConfig = Field(default_factory=BillingConfig)
    """Payment provider (``CLOUDPHONE_BILLING__*``)."""

    apps: AppsConfig = Field(default_factory=AppsConfig)
    """Object storage for APKs (``CLOUDPHONE_APPS__*``)."""

    devices: DevicesConfig = Field(default_factory=DevicesConfig)
    """Device runtime (``CLOUDPHONE_DEVICES__*``)."""

    otel: OtelConfig = Field(default_factory=OtelConfig)
    """OpenTelemetry tracing (``CLOUDPHONE_OTEL__*``)."""

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+")):
            raise ValueError(
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg:// (or +psycopg)://…"
            )
        return value

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'cloudphone.db'}"
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the database is a SQLite file (the embedded default)."""
        return self.database_url.startswith("sqlite")


def env_name(location: tuple[int | str, ...]) -> str:
    """The environment variable of a settings field.

    ``("billing", "provider")`` → ``CLOUDPHONE_BILLING__PROVIDER``.
    """
    names = [str(part).upper() for part in location if isinstance(part, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(names)


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (``overrides`` win) and fill the JWT secret.

    Raises:
        SettingsError: A value is invalid; the message names its environment variable.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    if settings.jwt_secret is None:
        secret = ensure_secret_file(settings.data_dir / JWT_SECRET_FILE)
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secret)})
    return settings


def ensure_secret_file(path: Path) -> str:
    """The secret stored at ``path``, generated (mode 0600) on first use.

    Several processes starting at once agree on one secret: it is written to a private
    temporary file and linked into place, which fails if another process won the race.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise SettingsError(f"the JWT secret in {path} is shorter than 32 characters")
    return secret


def _describe(error: ValidationError) -> str:
    lines = ["invalid settings:"]
    for item in error.errors(include_url=False):
        value = item.get("input")
        hidden = isinstance(value, dict) or any(
            word in str(part) for part in item["loc"] for word in ("secret", "key", "password")
        )
        shown = "" if hidden else f" (got {value!r})"
        lines.append(f"  {env_name(item['loc'])}: {item['msg']}{shown}")
    return "\n".join(lines)
