"""The overview: what needs attention first, then counts, activity charts and durations.

Everything comes from the platform's use cases: the engine's ``stats()`` and ``list()``, the
devices service's and the billing service's listings. Users see their own runs, devices,
refunds and payments; admins everyone's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloudphone.billing.models import Listing, Payment, PaymentStatus, Refund, RefundStatus
from cloudphone.console.rendering import render
from cloudphone.console.security import SessionDep, console_of
from cloudphone.console.session import Session
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.records import Device
from cloudphone.platform import Platform
from cloudphone.saga import SagaRun
from cloudphone.saga.stats import SagaStats

router = APIRouter()

WINDOWS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
"""The count windows an operator can pick (runs created within it)."""
DEFAULT_WINDOW = "24h"
ATTENTION_ROWS = 10


@dataclass(frozen=True)
class Attention:
    """The needs-attention queue.

    Attributes:
        failed_runs: The newest FAILED runs no operator resolved.
        failed_total: How many there are in all.
        devices_in_error: Devices in ERROR.
        refunds: The newest refunds in NEEDS_ATTENTION (an operator must reconcile them).
        more_refunds: More refunds need attention than are listed.
        stale_payments: The newest payments still PENDING longer than the payment reconcile's
            age (its note says what the provider answered).
        more_stale: More such payments exist than are listed.
        reconcile_age: That age.
        orphaned_runs: The newest active runs of a saga version no live worker has (they
            wait silently otherwise: start a worker with it, or migrate them).
        more_orphaned: More such runs exist than are listed.
    """

    failed_runs: list[SagaRun]
    failed_total: int
    devices_in_error: list[Device]
    refunds: list[Refund] = field(default_factory=list)
    more_refunds: bool = False
    stale_payments: list[Payment] = field(default_factory=list)
    more_stale: bool = False
    reconcile_age: timedelta = timedelta(minutes=10)
    orphaned_runs: list[SagaRun] = field(default_factory=list)
    more_orphaned: bool = False

    @property
    def empty(self) -> bool:
        """Nothing needs attention."""
        return not (
            self.failed_total
            or self.devices_in_error
            or self.refunds
            or self.stale_payments
            or self.orphaned_runs
        )


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, session: SessionDep, window: str = DEFAULT_WINDOW) -> Any:
    """The overview page (its live part alone for htmx's refresh)."""
    window = window if window in WINDOWS else DEFAULT_WINDOW
    platform = console_of(request).platform
    span = WINDOWS[window]
    owner = None if session.is_admin else session.user_id
    stats = await platform.engine.stats(
        since=datetime.now(UTC) - span if span else None, started_by=owner
    )
    attention = await _attention(platform, session, stats)
    types = sorted(set(platform.engine.sagas) | {c.saga_type for c in stats.counts})
    template = "_overview_live.html" if _is_poll(request) else "overview.html"
    return render(
        request,
        template,
        stats=stats,
        attention=attention,
        types=types,
        window=window,
        windows=list(WINDOWS),
        since=stats.since,
        activity=_activity(stats),
        nav="overview",
    )


async def _attention(platform: Platform, session: Session, stats: SagaStats) -> Attention:
    owner = None if session.is_admin else session.user_id
    failed = await platform.engine.list(
        needs_attention=True, started_by=owner, limit=ATTENTION_ROWS
    )
    orphaned = await platform.engine.list(orphaned=True, started_by=owner, limit=ATTENTION_ROWS + 1)
    devices = await platform.devices.list_devices(
        session.principal, status=DeviceStatus.ERROR, limit=ATTENTION_ROWS
    )
    billing = platform.billing
    one_more = Listing(limit=ATTENTION_ROWS + 1)
    refunds = await billing.list_all_refunds(
        session.principal, one_more, status=RefundStatus.NEEDS_ATTENTION
    )
    age = platform.settings.billing.payment_reconcile_age
    stale = await billing.list_payments(
        session.principal,
        replace(one_more, created_before=datetime.now(UTC) - age),
        status=PaymentStatus.PENDING,
    )
    return Attention(
        failed,
        stats.needs_attention,
        devices,
        refunds=refunds[:ATTENTION_ROWS],
        more_refunds=len(refunds) > ATTENTION_ROWS,
        stale_payments=stale[:ATTENTION_ROWS],
        more_stale=len(stale) > ATTENTION_ROWS,
        reconcile_age=age,
        orphaned_runs=orphaned[:ATTENTION_ROWS],
        more_orphaned=len(orphaned) > ATTENTION_ROWS,
    )


def _activity(stats: SagaStats) -> dict[str, Any]:
    """The charts' series (epoch seconds; failure rate in percent, None where nothing ended)."""
    minutes = stats.minutes
    rates = [m.failure_rate for m in minutes]
    finished = sum(m.finished for m in minutes)
    bad = sum(m.not_completed for m in minutes)
    return {
        "t": [int(m.minute.timestamp()) for m in minutes],
        "started": [m.started for m in minutes],
        "finished": [m.finished for m in minutes],
        "failure": [None if r is None else round(r * 100, 1) for r in rates],
        "total_started": sum(m.started for m in minutes),
        "total_finished": finished,
        "total_rate": round(bad / finished * 100, 1) if finished else None,
    }


def _is_poll(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"
