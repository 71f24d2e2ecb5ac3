"""Optional dependencies: the pip extras of the adapters that are not embedded defaults.

``pip install cloudphone`` runs every embedded default (SQLite, the filesystem store, local
devices, the sandbox provider). The real adapters need an extra each; choosing one without
it fails at start with :class:`MissingExtraError`, which names the setting and the command
that installs it.
"""

from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("asyncpg", "psycopg"),
    "s3": ("aiobotocore",),
    "stripe": ("stripe", "aiohttp"),
    "docker": ("aiodocker",),
    "otel": ("opentelemetry.sdk", "opentelemetry.instrumentation.fastapi"),
}
"""Extra → the modules it provides (``pyproject.toml`` lists the distributions)."""


class MissingExtraError(ImportError):
    """A setting chose an adapter whose extra is not installed."""


def require_extra(extra: str, *, needed_for: str) -> None:
    """Check that the modules of ``extra`` can be imported (without importing them).

    Args:
        extra: A key of :data:`EXTRAS`.
        needed_for: What asked for it, e.g. ``CLOUDPHONE_BILLING__PROVIDER=stripe``.

    Raises:
        MissingExtraError: A module is missing; the message says how to install it.
    """
    missing = [module for module in EXTRAS[extra] if not _importable(module)]
    if missing:
        raise MissingExtraError(
            f"{needed_for} needs the {extra!r} extra (missing: {', '.join(missing)}): "
            f"install cloudphone[{extra}], e.g. pip install 'cloudphone[{extra}]'"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (opentelemetry.sdk)
        return False
