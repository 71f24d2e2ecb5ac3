"""Use cases of the devices service: plain async methods taking a Principal.

They raise :mod:`cloudphone.domain` errors and know nothing of HTTP. Creation and deletion
start sagas in the request's transaction; stop and start act on the runtime directly.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.devices import quota
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.create import DEVICE_CREATE, CreateInput, container_name
from cloudphone.devices.delete import DELETABLE, DEVICE_DELETE, DeleteInput
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.quota import Quota
from cloudphone.devices.records import (
    LIVE,
    Device,
    find_live_by_name_txn,
    get_by_key_txn,
    get_device_txn,
    insert_device_txn,
    list_devices_txn,
    update_device_txn,
)
from cloudphone.devices.runtimes.base import (
    ContainerNotFoundError,
    DeviceBootError,
    DeviceRuntime,
    DeviceRuntimeError,
)
from cloudphone.devices.spec import DeviceSpec, QuotaLimits, validate_name
from cloudphone.devices.sweeper import Sweeper, SweepReport
from cloudphone.devices.watch import DeviceWatch, WatchReport
from cloudphone.domain import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    Principal,
    UnavailableError,
)
from cloudphone.periodic import Periodic
from cloudphone.saga import SagaEngine

log = logging.getLogger("cloudphone.devices")


@dataclass(frozen=True)
class DeviceCreation:
    """An accepted creation: the saga that runs it and the CREATING device."""

    saga_id: str
    device: Device
    replayed: bool = False
    """True when an earlier request with the same Idempotency-Key made it."""


@dataclass(frozen=True)
class DeviceDeletion:
    """An accepted deletion: the saga that runs it and the device (DELETING or DELETED)."""

    saga_id: str
    device: Device


def _now() -> datetime:
    return datetime.now(UTC)


class DeviceService:
    """The devices use cases.

    Args:
        engine: The saga engine (its database holds the devices tables too).
        config: Devices settings.
        runtime: The device runtime (stop/start; the sagas get it from their factories).
    """

    def __init__(self, engine: SagaEngine, config: DevicesConfig, runtime: DeviceRuntime) -> None:
        self.engine = engine
        self.db = engine.db
        self.config = config
        self.runtime = runtime
        self._sweeping = Periodic(
            "devices-sweep",
            self.sweep,
            config.sweep_interval,
            delay_first=True,
        )
        self._watch = DeviceWatch(
            self.db,
            runtime,
            boot_timeout=config.boot_timeout,
            call_timeout=config.runtime_call_timeout,
        )
        self._watching = Periodic("devices-watch", self.watch, config.watch_interval)

    # -- create ------------------------------------------------------------------------

    async def create_device(
        self,
        principal: Principal,
        name: str,
        spec: DeviceSpec,
        *,
        idempotency_key: str | None = None,
    ) -> DeviceCreation:
        """Accept a device: insert it CREATING, reserve its quota, start ``device_create``.

        All in one transaction: a request over quota, over the per-device maxima or with a
        duplicate name leaves nothing behind.

        Raises:
            InvalidInputError: Bad name or spec, or spec over the per-device maxima.
            ConflictError: The name is taken (``duplicate_name``), or the Idempotency-Key was
                used for a different request (``idempotency_key_reused``).
            QuotaExceededError: The device does not fit in the quota (the reason says which
                limit).
        """
        validate_name(name)
        spec.validate(self.config.android_versions)
        try:
            async with self.db.begin() as conn:
                if idempotency_key is not None:
                    earlier = await get_by_key_txn(conn, principal.user_id, idempotency_key)
                    if earlier is not None:
                        return self._replay(earlier, name, spec)
                return await self._accept_txn(conn, principal.user_id, name, spec, idempotency_key)
        except ConflictError:
            # A concurrent request with the same key may have won the insert: then this one
            # is a repeat like any other (200), not a conflict.
            if idempotency_key is None:
                raise
            async with self.db.read() as conn:
                earlier = await get_by_key_txn(conn, principal.user_id, idempotency_key)
            if earlier is None:
                raise
            return self._replay(earlier, name, spec)

    async def _accept_txn(
        self, conn: AsyncConnection, user: str, name: str, spec: DeviceSpec, key: str | None
    ) -> DeviceCreation:
        limits = (await quota.get_quota_txn(conn, user, self.config.default_quota)).limits
        limits.check_device(spec)
        if await find_live_by_name_txn(conn, user, name) is not None:
            raise ConflictError(f"you already have a device named {name!r}", code="duplicate_name")
        device_id = str(uuid.uuid4())
        data = CreateInput(device_id=device_id, owner_id=user, name=name, spec=spec)
        saga_id = await self.engine.start(DEVICE_CREATE, data, session=conn, started_by=user)
        now = _now()
        await insert_device_txn(
            conn,
            device_id=device_id,
            owner_id=user,
            name=name,
            spec=spec,
            create_saga_id=saga_id,
            idempotency_key=key,
            now=now,
        )
        # The same conditional UPDATE as RESERVE_QUOTA (which then adopts this reservation):
        # over quota, the whole request rolls back and nothing exists.
        await quota.reserve_txn(
            conn,
            saga_id=saga_id,
            user_id=user,
            device_id=device_id,
            spec=spec,
            defaults=self.config.default_quota,
            now=now,
        )
        device = await get_device_txn(conn, device_id)
        assert device is not None
        return DeviceCreation(saga_id, device)

    @staticmethod
    def _replay(earlier: Device, name: str, spec: DeviceSpec) -> DeviceCreation:
        if earlier.name != name or earlier.spec != spec:
            raise ConflictError(
                "this Idempotency-Key was used for a different device request",
                code="idempotency_key_reused",
            )
        return DeviceCreation(earlier.create_saga_id, earlier, replayed=True)

    # -- read --------------------------------------------------------------------------

    async def get_device(self, principal: Principal, device_id: str) -> Device:
        """One device; NotFoundError when it does not exist or belongs to someone else."""
        async with self.db.read() as conn:
            device = await get_device_txn(conn, device_id)
        if device is None or not principal.can_see(device.owner_id):
            raise NotFoundError(f"no device {device_id}")
        return device

    async def list_devices(
        self,
        principal: Principal,
        *,
        owner_id: str | None = None,
        include_deleted: bool = False,
        status: DeviceStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Device]:
        """The caller's devices (admins: anyone's, or everyone's when ``owner_id`` is None).

        ``status`` lists only the devices in that status (e.g. ERROR, for an operator).
        """
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit must be between 1 and 1000")
        if not principal.is_admin:
            if owner_id not in (None, principal.user_id):
                raise ForbiddenError("you can only list your own devices")
            owner_id = principal.user_id
        statuses = set(DeviceStatus) if include_deleted else LIVE
        if status is not None:
            statuses = {status}
        async with self.db.read() as conn:
            return await list_devices_txn(
                conn, owner_id=owner_id, statuses=statuses, limit=limit, offset=max(offset, 0)
            )

    # -- delete ------------------------------------------------------------------------

    async def delete_device(self, principal: Principal, device_id: str) -> DeviceDeletion:
        """Start ``device_delete`` (once per device: asking again returns the same run).

        Raises:
            NotFoundError: No such device of the caller's.
            ConflictError: The device is still being created.
        """
        async with self.db.begin() as conn:
            device = await get_device_txn(conn, device_id, for_update=True)
            if device is None or not principal.can_see(device.owner_id):
                raise NotFoundError(f"no device {device_id}")
            if device.delete_saga_id is not None:
                return DeviceDeletion(device.delete_saga_id, device)
            if device.status is DeviceStatus.CREATING:
                raise ConflictError(
                    f"device {device_id} is still being created (saga {device.create_saga_id})",
                    code="device_busy",
                )
            saga_id = await self.engine.start(
                DEVICE_DELETE,
                DeleteInput(device_id=device_id),
                session=conn,
                started_by=principal.user_id,
                idempotency_key=f"delete:{device_id}",
            )
            await update_device_txn(
                conn,
                device_id,
                expect=DELETABLE - {DeviceStatus.DELETING},
                now=_now(),
                status=DeviceStatus.DELETING,
                delete_saga_id=saga_id,
            )
            updated = await get_device_txn(conn, device_id)
        assert updated is not None
        return DeviceDeletion(saga_id, updated)

    # -- stop / start ------------------------------------------------------------------

    async def stop_device(self, principal: Principal, device_id: str) -> Device:
        """Stop a RUNNING device's container; it keeps its quota and ports.

        The status changes first, so the sweeper never restarts a device being stopped;
        stopping a STOPPED device stops its container again (a retry after a runtime error).
        """
        device = await self.get_device(principal, device_id)
        if device.status not in (DeviceStatus.RUNNING, DeviceStatus.STOPPED):
            raise ConflictError(f"device {device_id} is {device.status}", code="device_busy")
        if device.status is DeviceStatus.RUNNING:
            device = await self._move(device, DeviceStatus.RUNNING, DeviceStatus.STOPPED)
        try:
            await self.runtime.stop(container_name(device.create_saga_id))
        except DeviceRuntimeError as error:
            raise UnavailableError(f"the device runtime failed: {error}") from error
        return device

    async def start_device(self, principal: Principal, device_id: str) -> Device:
        """Start a STOPPED device and wait until it answers its handshake again."""
        device = await self.get_device(principal, device_id)
        if device.status is DeviceStatus.RUNNING:
            return device
        if device.status is not DeviceStatus.STOPPED:
            raise ConflictError(f"device {device_id} is {device.status}", code="device_busy")
        name = container_name(device.create_saga_id)
        try:
            container = await self.runtime.start(name)
            await self.runtime.initialize(
                container, device.id, device.spec, timeout=self.config.boot_timeout.total_seconds()
            )
        except ContainerNotFoundError as error:
            raise ConflictError(f"device {device_id} has no container: {error}") from error
        except (DeviceRuntimeError, DeviceBootError, TimeoutError) as error:
            raise UnavailableError(f"device {device_id} did not start: {error}") from error
        return await self._move(device, DeviceStatus.STOPPED, DeviceStatus.RUNNING)

    async def _move(self, device: Device, source: DeviceStatus, target: DeviceStatus) -> Device:
        async with self.db.begin() as conn:
            # Running again clears the reason a failed restart left.
            cleared = {"error": None} if target is DeviceStatus.RUNNING else {}
            moved = await update_device_txn(
                conn, device.id, expect={source}, now=_now(), status=target, **cleared
            )
            current = await get_device_txn(conn, device.id)
        assert current is not None
        if not moved and current.status is not target:
            raise ConflictError(
                f"device {device.id} became {current.status} meanwhile", code="device_busy"
            )
        return current

    # -- quotas ------------------------------------------------------------------------

    async def get_quota(self, principal: Principal, user_id: str | None = None) -> Quota:
        """A user's quota and usage (the caller's own unless an admin names another)."""
        target = user_id or principal.user_id
        if not principal.can_see(target):
            raise ForbiddenError("you can only see your own quota")
        async with self.db.read() as conn:
            return await quota.get_quota_txn(conn, target, self.config.default_quota)

    async def list_quotas(
        self, principal: Principal, *, limit: int = 100, offset: int = 0
    ) -> list[Quota]:
        """Every user's stored quota and usage, by user id (admins only)."""
        if not principal.is_admin:
            raise ForbiddenError("only admins can list every quota")
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit must be between 1 and 1000")
        async with self.db.read() as conn:
            return await quota.list_quotas_txn(conn, limit=limit, offset=max(offset, 0))

    async def set_quota(self, principal: Principal, user_id: str, limits: QuotaLimits) -> Quota:
        """Set a user's limits (admins only); usage and reservations are kept."""
        if not principal.is_admin:
            raise ForbiddenError("only admins can change quotas")
        values = [getattr(limits, f) for f in QuotaLimits.__dataclass_fields__]
        if any(v < 0 for v in values):
            raise InvalidInputError("quota limits must not be negative")
        async with self.db.begin() as conn:
            await quota.set_limits_txn(conn, user_id, limits, _now())
            return await quota.get_quota_txn(conn, user_id, self.config.default_quota)

    # -- housekeeping ------------------------------------------------------------------

    async def watch(self, now: datetime | None = None) -> WatchReport:
        """One round of the device watch: restart RUNNING devices whose container is gone.

        See :mod:`.watch`; worker processes run it every ``watch_interval``.
        """
        return await self._watch.check(now)

    async def start_watching(self) -> None:
        """Platform start-up hook: run the device watch every ``watch_interval``."""
        self._watching.start()

    async def stop_watching(self) -> None:
        """Platform shut-down hook: stop the device watch."""
        await self._watching.stop()

    async def sweep(self) -> SweepReport:
        """Restart dead devices, remove orphan containers, repair stale creations.

        A round of the watch (:mod:`.watch`) first, then the sweeper (:mod:`.sweeper`).
        """
        watched = await self.watch()
        report = SweepReport(restarted=watched.restarted, failed=watched.failed)
        report = await Sweeper(self.engine, self.runtime).sweep(report)
        if report.removed or report.repaired or report.restarted or report.failed:
            log.warning(
                "devices sweep fixed drift",
                extra={
                    "removed": report.removed,
                    "repaired": report.repaired,
                    "restarted": report.restarted,
                    "failed": report.failed,
                },
            )
        return report

    async def sweep_on_start(self) -> None:
        """Platform start-up hook: sweep now, then every ``sweep_interval``."""
        await self.sweep()
        self._sweeping.start()

    async def stop_sweeping(self) -> None:
        """Platform shut-down hook: stop the periodic sweep."""
        await self._sweeping.stop()
