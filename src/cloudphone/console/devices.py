"""Devices and quotas: status, spec, ADB endpoint, their sagas; usage against limits per user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from cloudphone.console.rendering import render
from cloudphone.console.security import SessionDep, console_of
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.quota import Quota

router = APIRouter()

PAGE = 100


@dataclass(frozen=True)
class Usage:
    """One quota dimension: what is used and reserved against the limit.

    Attributes:
        label: What is counted.
        unit: Its unit (empty for devices).
        used: In use by running devices.
        reserved: Held by creations in progress.
        limit: The user's limit.
    """

    label: str
    unit: str
    used: float
    reserved: float
    limit: float

    @property
    def taken(self) -> float:
        """Used plus reserved."""
        return self.used + self.reserved

    @property
    def level(self) -> str:
        """``ok``, ``high`` (≥ 80 %) or ``full`` (nothing left)."""
        if self.limit <= 0 or self.taken >= self.limit:
            return "full"
        return "high" if self.taken / self.limit >= 0.8 else "ok"


def usage(quota: Quota) -> list[Usage]:
    """The four dimensions of a quota, in display units (cores, GiB)."""
    used, reserved, limits = quota.used, quota.reserved, quota.limits
    return [
        Usage("Devices", "", used.devices, reserved.devices, limits.max_devices),
        Usage(
            "CPU",
            "cores",
            used.cpu_millis / 1000,
            reserved.cpu_millis / 1000,
            limits.max_cpu_millis / 1000,
        ),
        Usage(
            "Memory",
            "GiB",
            used.memory_mb / 1024,
            reserved.memory_mb / 1024,
            limits.max_memory_mb / 1024,
        ),
        Usage(
            "Storage",
            "GiB",
            used.storage_mb / 1024,
            reserved.storage_mb / 1024,
            limits.max_storage_mb / 1024,
        ),
    ]


@router.get("/devices", response_class=HTMLResponse)
async def devices_page(
    request: Request, session: SessionDep, status: str = "", owner: str = ""
) -> Any:
    """Devices (admins: everyone's, optionally one owner's; users: their own)."""
    wanted = DeviceStatus(status) if status in DeviceStatus.__members__ else None
    owner_id = owner.strip()[:200] or None if session.is_admin else None
    devices = await console_of(request).platform.devices.list_devices(
        session.principal, owner_id=owner_id, status=wanted, limit=PAGE
    )
    template = "_device_rows.html" if request.headers.get("HX-Request") == "true" else None
    return render(
        request,
        template or "devices.html",
        devices=devices,
        status=wanted.value if wanted else "",
        owner=owner_id or "",
        device_statuses=[s.value for s in DeviceStatus],
        nav="devices",
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse)
async def device_page(
    request: Request, session: SessionDep, device_id: Annotated[str, Path(max_length=64)]
) -> Any:
    """One device with its sagas, its applications (and theirs) and its owner's quota."""
    platform = console_of(request).platform
    device = await platform.devices.get_device(session.principal, device_id)
    quota = await platform.devices.get_quota(session.principal, device.owner_id)
    installations = await platform.installs.list_installations(session.principal, device_id)
    runs = await platform.engine.list(ids=[i.saga_id for i in installations], limit=PAGE)
    return render(
        request,
        "device.html",
        device=device,
        quota=quota,
        usage=usage(quota),
        installations=installations,
        run_status={run.id: run.status.value for run in runs},
        nav="devices",
    )


@router.get("/quotas", response_class=HTMLResponse)
async def quotas_page(request: Request, session: SessionDep) -> Any:
    """Usage against limits: every user's (admins) or the caller's own."""
    service = console_of(request).platform.devices
    if session.is_admin:
        quotas = await service.list_quotas(session.principal, limit=PAGE)
    else:
        quotas = [await service.get_quota(session.principal)]
    return render(request, "quotas.html", quotas=[(q, usage(q)) for q in quotas], nav="quotas")
