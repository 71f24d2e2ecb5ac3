"""Billing settings (the ``billing`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from cloudphone.config import Duration, Renamed, Section, milliseconds


class SandboxConfig(Section):
    """Fault knobs of the sandbox provider (env ``CLOUDPHONE_BILLING__SANDBOX__*``).

    All off by default: the sandbox then behaves like a healthy provider that refunds at once.
    """

    env_prefix: ClassVar[str] = "CLOUDPHONE_BILLING__SANDBOX__"
    renamed: ClassVar[dict[str, Renamed]] = {"latency_ms": Renamed("latency", milliseconds)}

    latency: Duration = Field(default=timedelta(0), ge=timedelta(0))
    """Delay before every answer (simulated network and processing time)."""

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls (any kind) that fail with a 503-like *unknown outcome* before anything is
    done; a later lookup finds nothing."""

    timeout_after_refund_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of refund creations whose answer is lost *after* the money moved (unknown outcome;
    a later lookup finds the refund)."""

    refuse_connections: bool = False
    """Every call fails as if the TCP connection were refused: nothing was sent (definitive)."""

    pending_polls: int = Field(default=0, ge=0)
    """Refunds first answer "pending" and become final after this many status checks."""

    pending_outcome: Literal["succeeded", "failed"] = "succeeded"
    """How a pending refund ends."""

    ignore_idempotency_key: bool = False
    """Create a new refund on every call, like localstripe, instead of replaying the first one
    for the same key like real Stripe (tests use it to prove the saga's own lookup)."""


class BillingConfig(Section):
    """Payment providers, credentials and refund timing (env ``CLOUDPHONE_BILLING__*``)."""

    env_prefix: ClassVar[str] = "CLOUDPHONE_BILLING__"
    renamed: ClassVar[dict[str, Renamed]] = {
        "stripe_timeout_seconds": Renamed("stripe_timeout"),
        "stripe_connect_timeout_seconds": Renamed("stripe_connect_timeout"),
        "refund_poll_seconds": Renamed("refund_poll_interval"),
        "refund_retry_initial_seconds": Renamed("refund_retry_initial_interval"),
    }

    provider: Literal["sandbox", "stripe"] = "sandbox"
    """Provider used when a payment request names none: ``sandbox`` (in-process, the embedded
    default) or ``stripe``. The sandbox is always available; stripe when a key is set."""

    stripe_api_key: SecretStr | None = None
    """Stripe secret key (``sk_…``); enables the stripe provider. Never logged."""

    stripe_api_base: str | None = None
    """Override the Stripe API address, ``scheme://host:port`` without ``/v1`` (localstripe)."""

    stripe_timeout: Duration = Field(default=timedelta(seconds=30), gt=timedelta(0))
    """Read timeout of one request towards Stripe."""

    stripe_connect_timeout: Duration = Field(default=timedelta(seconds=5), gt=timedelta(0))
    """Connect timeout towards Stripe."""

    stripe_payment_method: str = "pm_card_visa"
    """Payment method confirmed when a payment request names none (a Stripe test-mode card)."""

    refund_poll_interval: Duration = Field(default=timedelta(seconds=5), gt=timedelta(0))
    """How long to wait between status checks of a refund the provider still processes."""

    refund_retry_initial_interval: Duration = Field(default=timedelta(seconds=1), gt=timedelta(0))
    """First retry delay of a refund step (doubling, full jitter, 4 attempts)."""

    payment_reconcile_age: Duration = Field(default=timedelta(minutes=10), gt=timedelta(0))
    """How long a payment must have stayed PENDING, untouched, before worker processes ask its
    provider about it and settle it (SUCCESS, or FAILED "no charge found"). Must exceed one
    Stripe call's timeouts, so no answer is still on its way."""

    payment_reconcile_interval: Duration = Field(default=timedelta(minutes=1), ge=timedelta(0))
    """How often worker processes run the payment reconcile; 0 turns it off."""

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Fault knobs of the sandbox provider."""

    @model_validator(mode="after")
    def _check_reconcile_age(self) -> BillingConfig:
        call = self.stripe_timeout + self.stripe_connect_timeout
        if self.payment_reconcile_age <= call:
            raise ValueError(
                f"payment_reconcile_age ({self.payment_reconcile_age}) must exceed the Stripe "
                f"timeouts ({call}): a payment's answer could still be on its way"
            )
        return self
