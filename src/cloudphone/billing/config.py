"""Billing settings (the ``billing`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class BillingConfig(BaseModel):
    """Payment provider choice and credentials (env ``CLOUDPHONE_BILLING__*``)."""

    provider: Literal["sandbox", "stripe"] = "sandbox"
    """``sandbox`` (in-process, the embedded default) or ``stripe``."""

    stripe_api_key: SecretStr | None = None
    """Stripe secret key (``sk_…``); required when provider is stripe. Never logged."""

    stripe_api_base: str | None = None
    """Override the Stripe API address (e.g. a local ``localstripe``)."""

    stripe_timeout_seconds: float = Field(default=30.0, gt=0)
    """Per-request timeout towards the provider."""
