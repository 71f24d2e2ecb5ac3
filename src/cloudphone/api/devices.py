"""Devices API: devices (create, list, read, delete, stop, start) and quotas.

Thin: validate shapes, call :class:`~cloudphone.devices.service.DeviceService`, render. CPU is
given in cores (``1.5``); memory and storage in MiB. Users see and act on their own devices
only; anything else is 404. Creation answers 409 ``quota_exceeded`` (with the limit that does
not fit) or ``duplicate_name`` at once, with nothing created; 422 for a spec over the
per-device maxima.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudphone.api.deps import AdminDep, IdempotencyKeyDep, PlatformDep, PrincipalDep
from cloudphone.api.errors import error_responses
from cloudphone.api.idempotency import set_started_status
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.quota import Quota
from cloudphone.devices.records import Device
from cloudphone.devices.spec import DeviceSpec, QuotaLimits, Resources, cores_to_millis
from cloudphone.domain import InvalidInputError

router = APIRouter(tags=["devices"], responses=error_responses(401, 422))

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="The device id.")]
UserId = Annotated[str, Path(min_length=1, max_length=200, description="The user id.")]
Cores = Annotated[float, Field(gt=0, le=256, description="CPU cores (0.001 steps).")]
MiB = Annotated[int, Field(gt=0, le=16 * 1024 * 1024, description="MiB.")]
_DEFAULT = DeviceSpec()
MAX_INT = 2**31 - 1
"""Largest amount the database columns hold."""


class DeviceSpecIn(BaseModel):
    """Resources and screen of a new device."""

    model_config = ConfigDict(extra="forbid")
    cpu: Cores = _DEFAULT.cpu_millis / 1000
    memory_mb: MiB = _DEFAULT.memory_mb
    storage_mb: MiB = _DEFAULT.storage_mb
    resolution: str = Field(default=_DEFAULT.resolution, max_length=16, examples=["1080x1920"])
    dpi: int = Field(default=_DEFAULT.dpi, ge=1, le=10_000)
    android_version: str = Field(default=_DEFAULT.android_version, max_length=16)

    def to_spec(self) -> DeviceSpec:
        """The domain spec."""
        return DeviceSpec(
            cpu_millis=cores_to_millis(self.cpu),
            memory_mb=self.memory_mb,
            storage_mb=self.storage_mb,
            resolution=self.resolution,
            dpi=self.dpi,
            android_version=self.android_version,
        )


class DeviceCreate(DeviceSpecIn):
    """A new device."""

    name: str = Field(min_length=1, max_length=63, description="Unique among your devices.")


class DeviceSpecOut(BaseModel):
    """Resources and screen of a device."""

    cpu: float = Field(description="CPU cores.")
    memory_mb: int
    storage_mb: int
    resolution: str
    dpi: int
    android_version: str

    @classmethod
    def of(cls, spec: DeviceSpec) -> DeviceSpecOut:
        """Render a spec."""
        return cls(
            cpu=spec.cpu_millis / 1000,
            memory_mb=spec.memory_mb,
            storage_mb=spec.storage_mb,
            resolution=spec.resolution,
            dpi=spec.dpi,
            android_version=spec.android_version,
        )


class DeviceOut(BaseModel):
    """A device."""

    id: str
    owner_id: str
    name: str
    status: DeviceStatus
    spec: DeviceSpecOut
    runtime: str | None = Field(description="`local` or `docker` once its container exists.")
    container_id: str | None
    adb_host: str | None
    adb_port: int | None = Field(description="Connect with `adb connect adb_host:adb_port`.")
    stream_port: int | None = Field(description="Screen-stream port on `adb_host`.")
    create_saga_id: str = Field(description="The `device_create` run (`GET /sagas/{id}`).")
    delete_saga_id: str | None = Field(description="The `device_delete` run, once deleted.")
    error: str | None = Field(
        description="Why it is in ERROR; why it is STOPPED when it stopped unexpectedly and "
        "could not be restarted; what is happening while RESTARTING."
    )
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        """Render a device."""
        fields = {f: getattr(device, f) for f in cls.model_fields if f != "spec"}
        return cls(**fields, spec=DeviceSpecOut.of(device.spec))


class DeviceAccepted(BaseModel):
    """A creation or deletion was accepted; its saga runs in the background."""

    saga_id: str = Field(description="Follow it at `GET /sagas/{saga_id}`.")
    device: DeviceOut


class DevicePage(BaseModel):
    """One page of devices, oldest first."""

    items: list[DeviceOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class QuotaLimitsIO(BaseModel):
    """What a user may hold, in total and per device."""

    model_config = ConfigDict(extra="forbid")
    max_devices: int = Field(ge=0, le=1_000_000)
    max_cpu_cores: float = Field(ge=0, le=1_000_000)
    max_memory_mb: int = Field(ge=0, le=MAX_INT)
    max_storage_mb: int = Field(ge=0, le=MAX_INT)
    device_max_cpu_cores: float = Field(ge=0.001, le=1_000, description="0.001 steps.")
    device_max_memory_mb: int = Field(ge=1, le=MAX_INT)
    device_max_storage_mb: int = Field(ge=1, le=MAX_INT)

    def to_limits(self) -> QuotaLimits:
        """The domain limits."""
        return QuotaLimits(
            max_devices=self.max_devices,
            max_cpu_millis=cores_to_millis(self.max_cpu_cores),
            max_memory_mb=self.max_memory_mb,
            max_storage_mb=self.max_storage_mb,
            device_max_cpu_millis=cores_to_millis(self.device_max_cpu_cores),
            device_max_memory_mb=self.device_max_memory_mb,
            device_max_storage_mb=self.device_max_storage_mb,
        )

    @classmethod
    def of(cls, limits: QuotaLimits) -> QuotaLimitsIO:
        """Render limits."""
        return cls(
            max_devices=limits.max_devices,
            max_cpu_cores=limits.max_cpu_millis / 1000,
            max_memory_mb=limits.max_memory_mb,
            max_storage_mb=limits.max_storage_mb,
            device_max_cpu_cores=limits.device_max_cpu_millis / 1000,
            device_max_memory_mb=limits.device_max_memory_mb,
            device_max_storage_mb=limits.device_max_storage_mb,
        )


class ResourcesOut(BaseModel):
    """An amount of devices, CPU, memory and storage."""

    devices: int
    cpu_cores: float
    memory_mb: int
    storage_mb: int

    @classmethod
    def of(cls, amount: Resources) -> ResourcesOut:
        """Render an amount."""
        return cls(
            devices=amount.devices,
            cpu_cores=amount.cpu_millis / 1000,
            memory_mb=amount.memory_mb,
            storage_mb=amount.storage_mb,
        )


class QuotaOut(BaseModel):
    """A user's quota: limits, usage, reservations of creations in flight, what is left."""

    user_id: str
    limits: QuotaLimitsIO
    used: ResourcesOut = Field(description="Held by the user's devices.")
    reserved: ResourcesOut = Field(description="Held by creations still running.")
    available: ResourcesOut = Field(description="What one more creation may take.")

    @classmethod
    def of(cls, quota: Quota) -> QuotaOut:
        """Render a quota."""
        return cls(
            user_id=quota.user_id,
            limits=QuotaLimitsIO.of(quota.limits),
            used=ResourcesOut.of(quota.used),
            reserved=ResourcesOut.of(quota.reserved),
            available=ResourcesOut.of(quota.available),
        )


@router.post(
    "/devices",
    status_code=202,
    summary="Create a device",
    responses={
        **error_responses(409),
        200: {"model": DeviceAccepted, "description": "The Idempotency-Key was used before."},
    },
)
async def create_device(
    body: DeviceCreate,
    response: Response,
    platform: PlatformDep,
    principal: PrincipalDep,
    idempotency: IdempotencyKeyDep,
) -> DeviceAccepted:
    """Start ``device_create``: 202 with the CREATING device and the saga id.

    409 ``quota_exceeded`` (the message names the limit) or ``duplicate_name``; 422 for a bad
    spec or one over the per-device maxima. Nothing is created in those cases. The same
    ``Idempotency-Key`` answers 200 with the first request's device.
    """
    done = await platform.devices.create_device(
        principal,
        body.name,
        body.to_spec(),
        idempotency_key=idempotency.engine_key if idempotency is not None else None,
    )
    set_started_status(response, created=not done.replayed)
    response.headers["Location"] = f"/devices/{done.device.id}"
    return DeviceAccepted(saga_id=done.saga_id, device=DeviceOut.of(done.device))


LIST_PARAMETERS = frozenset({"include_deleted", "owner_id", "limit", "offset"})


def _known_parameters_only(request: Request) -> None:
    """Refuse query parameters the route does not know (a typo must not widen the list)."""
    unknown = sorted(set(request.query_params) - LIST_PARAMETERS)
    if unknown:
        raise InvalidInputError(f"unknown query parameter(s): {', '.join(map(repr, unknown))}")


@router.get(
    "/devices",
    summary="List devices",
    responses=error_responses(403),
    dependencies=[Depends(_known_parameters_only)],
)
async def list_devices(
    platform: PlatformDep,
    principal: PrincipalDep,
    include_deleted: Annotated[bool, Query(description="Also DELETED devices.")] = False,
    owner_id: Annotated[
        str, Query(max_length=200, description="Admins: only this user's (empty: everyone's).")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> DevicePage:
    """Your devices, oldest first (admins: everyone's, or ``owner_id``'s).

    403 when a user asks for another user's devices.
    """
    devices = await platform.devices.list_devices(
        principal,
        owner_id=owner_id or None,
        include_deleted=include_deleted,
        limit=limit + 1,
        offset=offset,
    )
    more = len(devices) > limit
    return DevicePage(
        items=[DeviceOut.of(d) for d in devices[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/devices/{device_id}", summary="Read a device", responses=error_responses(404))
async def get_device(
    device_id: DeviceId, platform: PlatformDep, principal: PrincipalDep
) -> DeviceOut:
    """The device (404 if it is not yours)."""
    return DeviceOut.of(await platform.devices.get_device(principal, device_id))


@router.delete(
    "/devices/{device_id}",
    status_code=202,
    summary="Delete a device",
    responses=error_responses(404, 409),
)
async def delete_device(
    device_id: DeviceId, platform: PlatformDep, principal: PrincipalDep
) -> DeviceAccepted:
    """Start ``device_delete``: 202 with its saga id. Deleting again answers the same run.

    409 while the device is still being created.
    """
    done = await platform.devices.delete_device(principal, device_id)
    return DeviceAccepted(saga_id=done.saga_id, device=DeviceOut.of(done.device))


@router.post(
    "/devices/{device_id}/stop",
    summary="Stop a device",
    responses=error_responses(404, 409, 503),
)
async def stop_device(
    device_id: DeviceId, platform: PlatformDep, principal: PrincipalDep
) -> DeviceOut:
    """Stop a RUNNING device (it keeps its quota and ports); a STOPPED one is left as is."""
    return DeviceOut.of(await platform.devices.stop_device(principal, device_id))


@router.post(
    "/devices/{device_id}/start",
    summary="Start a device",
    responses=error_responses(404, 409, 503),
)
async def start_device(
    device_id: DeviceId, platform: PlatformDep, principal: PrincipalDep
) -> DeviceOut:
    """Start a STOPPED device and wait until it answers; a RUNNING one is left as is."""
    return DeviceOut.of(await platform.devices.start_device(principal, device_id))


@router.get("/quotas/me", summary="Your device quota")
async def my_quota(platform: PlatformDep, principal: PrincipalDep) -> QuotaOut:
    """Your limits, usage, reservations and what is left."""
    return QuotaOut.of(await platform.devices.get_quota(principal))


@router.get(
    "/admin/quotas/{user_id}", summary="A user's device quota", responses=error_responses(403)
)
async def get_quota(user_id: UserId, platform: PlatformDep, admin: AdminDep) -> QuotaOut:
    """A user's limits and usage (admins)."""
    return QuotaOut.of(await platform.devices.get_quota(admin, user_id))


@router.put(
    "/admin/quotas/{user_id}", summary="Set a user's device quota", responses=error_responses(403)
)
async def set_quota(
    user_id: UserId, body: QuotaLimitsIO, platform: PlatformDep, admin: AdminDep
) -> QuotaOut:
    """Set a user's limits (admins). Usage is kept; limits below it only refuse new devices."""
    return QuotaOut.of(await platform.devices.set_quota(admin, user_id, body.to_limits()))
