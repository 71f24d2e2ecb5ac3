"""Test helpers for users of billing: a provider wrapper that fails chosen calls.

The sandbox provider's knobs cover rates and modes; :class:`ScriptedProvider` covers faults a
test must aim precisely, e.g. "lookups fail, creations work". Nothing in the product uses it.

Example::

    provider = ScriptedProvider(SandboxProvider(db))
    provider.fail("find_refund", error=ProviderUnknownOutcome("lookup timed out"))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from cloudphone.billing.providers.base import (
    PaymentProvider,
    ProviderCharge,
    ProviderError,
    ProviderRefund,
    ProviderUnknownOutcome,
)


@dataclass
class _Fault:
    error: ProviderError
    remaining: int | None
    after: bool = False
    """Raise after the wrapped call went through (the answer is lost, the effect is not)."""


@dataclass
class ScriptedProvider:
    """Wraps a provider; chosen methods raise chosen errors; every call is counted."""

    inner: PaymentProvider
    calls: Counter[str] = field(default_factory=Counter)
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The wrapped provider's name."""
        return self.inner.name

    def fail(self, method: str, *, error: ProviderError, times: int | None = None) -> None:
        """Make the next ``times`` calls of ``method`` raise ``error`` (None: every call)."""
        self._faults.setdefault(method, []).append(_Fault(error, times))

    def lose_answer(self, method: str, *, times: int | None = 1) -> None:
        """Let the next ``times`` calls of ``method`` act, then raise an unknown outcome."""
        lost = ProviderUnknownOutcome(f"scripted: read timed out after {method} went through")
        self._faults.setdefault(method, []).append(_Fault(lost, times, after=True))

    def heal(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    def _enter(self, method: str, *, after: bool = False) -> None:
        if not after:
            self.calls[method] += 1
        for fault in self._faults.get(method, []):
            if fault.after != after:
                continue
            if fault.remaining is None:
                raise fault.error
            if fault.remaining > 0:
                fault.remaining -= 1
                raise fault.error

    async def create_payment(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        description: str,
        payment_method: str | None,
    ) -> ProviderCharge:
        """See :meth:`PaymentProvider.create_payment`."""
        self._enter("create_payment")
        made = await self.inner.create_payment(
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            description=description,
            payment_method=payment_method,
        )
        self._enter("create_payment", after=True)
        return made

    async def find_payment(self, *, payment_id: str, since: datetime) -> ProviderCharge | None:
        """See :meth:`PaymentProvider.find_payment`."""
        self._enter("find_payment")
        return await self.inner.find_payment(payment_id=payment_id, since=since)

    async def create_refund(
        self, *, charge_id: str, refund_id: str, amount: int, currency: str
    ) -> ProviderRefund:
        """See :meth:`PaymentProvider.create_refund`."""
        self._enter("create_refund")
        made = await self.inner.create_refund(
            charge_id=charge_id, refund_id=refund_id, amount=amount, currency=currency
        )
        self._enter("create_refund", after=True)
        return made

    async def find_refund(self, *, charge_id: str, refund_id: str) -> ProviderRefund | None:
        """See :meth:`PaymentProvider.find_refund`."""
        self._enter("find_refund")
        return await self.inner.find_refund(charge_id=charge_id, refund_id=refund_id)

    async def get_refund(self, refund_ref: str) -> ProviderRefund:
        """See :meth:`PaymentProvider.get_refund`."""
        self._enter("get_refund")
        return await self.inner.get_refund(refund_ref)

    async def close(self) -> None:
        """Close the wrapped provider."""
        await self.inner.close()
