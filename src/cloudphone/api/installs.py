"""Installs API: applications on a device (install, list, uninstall).

Thin: validate shapes, call :class:`~cloudphone.installs.service.InstallService`, render. The
caller must own the device (admins: any) and be allowed to read the application (their own
upload or a catalog application). Refusals are synchronous and reserve nothing: 404 (not your
device, not an application you may read, no such package on the device), 409
``device_not_running``, ``not_available``, ``downgrade`` (a lower version without
``allow_downgrade``), ``installation_busy`` (another install or uninstall of the package on
the device is running: the message names its saga).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudphone.api.deps import IdempotencyKeyDep, PlatformDep, PrincipalDep
from cloudphone.api.errors import error_responses
from cloudphone.api.idempotency import set_started_status
from cloudphone.installs.models import Installation, InstallStatus

router = APIRouter(tags=["installs"], responses=error_responses(401, 404, 422))

DeviceId = Annotated[str, Path(min_length=1, max_length=64, description="The device id.")]
Package = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.]+$",
        description="The Android package name.",
    ),
]


class InstallRequest(BaseModel):
    """An application to put on the device."""

    model_config = ConfigDict(extra="forbid")
    app_id: str = Field(
        min_length=1, max_length=64, description="The application record (`GET /apps`)."
    )
    allow_downgrade: bool = Field(
        default=False,
        description="Install even when the device has a higher version of the package.",
    )


class InstallationOut(BaseModel):
    """One application on one device."""

    device_id: str
    package_name: str
    status: InstallStatus = Field(
        description="INSTALLING → INSTALLED (or back to the earlier version / gone when "
        "undone); UNINSTALLING → gone; FAILED: its run failed and waits for an operator."
    )
    app_id: str = Field(description="The application record installed or being installed.")
    version_code: int
    version_name: str | None
    saga_id: str = Field(description="The run that holds the row, or last moved it.")
    previous_version_code: int | None = Field(
        description="While an upgrade runs: the version it replaces."
    )
    installed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, installation: Installation) -> InstallationOut:
        """Render an installation."""
        return cls(**{f: getattr(installation, f) for f in cls.model_fields})


class InstallAcceptedOut(BaseModel):
    """An install was accepted; its ``app_install`` saga runs in the background."""

    saga_id: str = Field(description="Follow it at `GET /sagas/{saga_id}`.")
    installation: InstallationOut | None = Field(
        description="The reserved row (null on a repeated key whose run left none)."
    )


class UninstallAcceptedOut(BaseModel):
    """An uninstall was accepted; its ``app_uninstall`` saga runs in the background."""

    saga_id: str = Field(description="Follow it at `GET /sagas/{saga_id}`.")
    installation: InstallationOut


class InstallationList(BaseModel):
    """A device's applications, by package name."""

    items: list[InstallationOut]


@router.post(
    "/devices/{device_id}/apps",
    status_code=202,
    summary="Install an application on a device",
    responses={
        **error_responses(409),
        200: {"model": InstallAcceptedOut, "description": "The Idempotency-Key was used before."},
    },
)
async def install_app(
    device_id: DeviceId,
    body: InstallRequest,
    response: Response,
    platform: PlatformDep,
    principal: PrincipalDep,
    idempotency: IdempotencyKeyDep,
) -> InstallAcceptedOut:
    """Start ``app_install``: 202 with the INSTALLING row and the saga id.

    A higher version upgrades the installed one; a lower one is refused (409 ``downgrade``)
    unless ``allow_downgrade``. The same ``Idempotency-Key`` answers 200 with the first
    request's run.
    """
    done = await platform.installs.install_app(
        principal,
        device_id,
        body.app_id,
        allow_downgrade=body.allow_downgrade,
        idempotency_key=idempotency.engine_key if idempotency is not None else None,
    )
    set_started_status(response, created=done.created)
    row = done.installation
    return InstallAcceptedOut(
        saga_id=done.saga_id, installation=InstallationOut.of(row) if row is not None else None
    )


@router.get("/devices/{device_id}/apps", summary="List a device's applications")
async def list_installations(
    device_id: DeviceId, platform: PlatformDep, principal: PrincipalDep
) -> InstallationList:
    """The device's applications and their status, by package name."""
    rows = await platform.installs.list_installations(principal, device_id)
    return InstallationList(items=[InstallationOut.of(row) for row in rows])


@router.delete(
    "/devices/{device_id}/apps/{package}",
    status_code=202,
    summary="Uninstall an application from a device",
    responses=error_responses(409),
)
async def uninstall_app(
    device_id: DeviceId, package: Package, platform: PlatformDep, principal: PrincipalDep
) -> UninstallAcceptedOut:
    """Start ``app_uninstall``: 202 with its saga id. Asking again answers the same run."""
    done = await platform.installs.uninstall_app(principal, device_id, package)
    return UninstallAcceptedOut(
        saga_id=done.saga_id, installation=InstallationOut.of(done.installation)
    )
