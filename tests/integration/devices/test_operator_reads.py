"""Reads an operator needs: devices in one status, and every user's quota."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.records import update_device_txn
from cloudphone.domain import ForbiddenError, Principal, Role
from cloudphone.saga import SagaStatus
from tests.support.devices_stack import SMALL, DeviceStack, limits, wait_all

ADMIN = Principal("ops", Role.ADMIN)


async def test_devices_can_be_listed_by_status(stack: DeviceStack, user: Principal) -> None:
    """``status=ERROR`` lists only the devices in ERROR (then their runs are driven to the end)."""
    broken = await stack.service.create_device(user, "broken", SMALL)
    fine = await stack.service.create_device(user, "fine", SMALL)
    async with stack.db.begin() as conn:
        await update_device_txn(
            conn,
            broken.device.id,
            expect={DeviceStatus.CREATING},
            now=datetime.now(UTC),
            status=DeviceStatus.ERROR,
            error="boot failed",
        )
    errors = await stack.service.list_devices(
        ADMIN, owner_id=user.user_id, status=DeviceStatus.ERROR
    )
    assert [d.id for d in errors] == [broken.device.id]
    mine = await stack.service.list_devices(user, status=DeviceStatus.CREATING)
    assert [d.name for d in mine] == ["fine"]
    async with stack.engine.worker():
        runs = await wait_all(stack, [broken.saga_id, fine.saga_id])
    assert [r.status for r in runs] == [SagaStatus.COMPENSATED, SagaStatus.COMPLETED]


async def test_admins_list_every_users_quota(stack: DeviceStack, unique: str) -> None:
    """Each user with a stored quota is listed with limits and usage; users may not list."""
    names = [f"q-{unique}-{i}" for i in range(3)]
    for i, name in enumerate(names):
        await stack.set_limits(name, limits(devices_=i + 1))
    listed = {q.user_id: q for q in await stack.service.list_quotas(ADMIN, limit=1000)}
    assert [listed[n].limits.max_devices for n in names] == [1, 2, 3]
    assert listed[names[0]].used.devices == 0
    with pytest.raises(ForbiddenError):
        await stack.service.list_quotas(Principal(names[0]))
