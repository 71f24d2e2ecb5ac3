"""Quotas hold under concurrency; bad input is refused with nothing created."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from cloudphone.devices.create import DEVICE_CREATE
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.spec import DeviceSpec, Resources
from cloudphone.domain import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    Principal,
    QuotaExceededError,
)
from cloudphone.saga import SagaStatus
from tests.support.devices_stack import ADMIN, SMALL, DeviceStack, limits, wait_all


async def assert_nothing_for(stack: DeviceStack, user: Principal) -> None:
    """No device, run, reservation, port or container exists for the user."""
    assert await stack.devices_of(user.user_id) == []
    assert await stack.runs_of(user.user_id) == []
    assert await stack.reservations(user.user_id) == {}
    assert await stack.ports_of_user(user.user_id) == []
    assert await stack.containers() == []
    quota = await stack.quota(user.user_id)
    assert (quota.used, quota.reserved) == (Resources(), Resources())


async def test_fifty_concurrent_requests_for_quota_five(
    stack: DeviceStack, user: Principal
) -> None:
    """50 concurrent creations, quota 5: exactly 5 RUNNING, 45 refused with the reason, usage 5."""
    await stack.set_limits(user.user_id, limits(devices_=5))
    async with stack.engine.worker(concurrency=16):
        outcomes = await asyncio.gather(
            *(stack.service.create_device(user, f"phone-{i}", SMALL) for i in range(50)),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        runs = await wait_all(stack, [a.saga_id for a in accepted])

    assert len(accepted) == 5
    assert len(refused) == 45
    for error in refused:
        assert isinstance(error, QuotaExceededError), repr(error)
        assert "devices: " in error.message
        assert "> limit 5" in error.message
    assert [r.status for r in runs] == [SagaStatus.COMPLETED] * 5
    devices = await stack.devices_of(user.user_id)
    assert sorted(d.status for d in devices) == [DeviceStatus.RUNNING] * 5
    quota = await stack.quota(user.user_id)
    assert quota.used == Resources(
        5, 5 * SMALL.cpu_millis, 5 * SMALL.memory_mb, 5 * SMALL.storage_mb
    )
    assert quota.reserved == Resources()
    assert len(await stack.runs_of(user.user_id)) == 5
    assert len(await stack.ports_of_user(user.user_id)) == 10
    containers = await stack.containers()
    assert sorted(c.name for c in containers) == sorted(d.container_name for d in devices)
    assert all(c.running for c in containers)


async def test_concurrent_sagas_without_api_reservation_never_exceed_quota(
    stack: DeviceStack, user: Principal
) -> None:
    """Runs started directly (no request-time reservation): RESERVE_QUOTA alone holds the line."""
    await stack.set_limits(user.user_id, limits(devices_=3))
    async with stack.engine.worker(concurrency=16):
        saga_ids = await asyncio.gather(
            *(
                stack.engine.start(
                    DEVICE_CREATE,
                    {
                        "device_id": str(uuid.uuid4()),
                        "owner_id": user.user_id,
                        "name": f"direct-{i}",
                        "spec": SMALL.to_data(),
                    },
                    started_by=user.user_id,
                )
                for i in range(12)
            )
        )
        runs = await wait_all(stack, list(saga_ids))

    done = [r for r in runs if r.status is SagaStatus.COMPLETED]
    undone = [r for r in runs if r.status is SagaStatus.COMPENSATED]
    assert (len(done), len(undone)) == (3, 9)
    for run in undone:
        assert run.error is not None
        assert run.error.step == "RESERVE_QUOTA"
        assert "quota exceeded" in run.error.message
    assert (await stack.quota(user.user_id)).used.devices == 3
    assert await stack.reservations(user.user_id) == {"CONSUMED": 3}
    assert len(await stack.ports_of_user(user.user_id)) == 6
    assert len(await stack.containers()) == 3
    assert len(await stack.devices_of(user.user_id)) == 3


async def test_total_memory_limit_is_enforced_with_its_reason(
    stack: DeviceStack, user: Principal
) -> None:
    """A device that fits the count but not the memory total is refused, naming memory."""
    await stack.set_limits(user.user_id, limits(devices_=5, memory_mb=400))
    with pytest.raises(QuotaExceededError) as refused:
        await stack.service.create_device(user, "big", replace(SMALL, memory_mb=512))
    assert "memory_mb: 0 used + 0 reserved + 512 requested > limit 400" in refused.value.message
    await assert_nothing_for(stack, user)


async def test_spec_over_per_device_maximum_is_refused(stack: DeviceStack, user: Principal) -> None:
    """CPU over the per-device maximum → 422-class error, nothing created."""
    with pytest.raises(InvalidInputError) as refused:
        await stack.service.create_device(user, "huge", replace(SMALL, cpu_millis=16000))
    assert refused.value.code == "spec_over_device_maximum"
    assert "cpu_cores 16 exceeds the per-device maximum 4" in refused.value.message
    await assert_nothing_for(stack, user)


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("bad name!", SMALL),
        ("", SMALL),
        ("ok", replace(SMALL, resolution="big")),
        ("ok", replace(SMALL, dpi=10)),
        ("ok", replace(SMALL, android_version="2")),
        ("ok", replace(SMALL, memory_mb=1)),
    ],
)
async def test_malformed_requests_are_refused(
    stack: DeviceStack, user: Principal, name: str, spec: DeviceSpec
) -> None:
    """Bad names and specs → InvalidInputError, nothing created."""
    with pytest.raises(InvalidInputError):
        await stack.service.create_device(user, name, spec)
    await assert_nothing_for(stack, user)


async def test_duplicate_name_is_refused_until_the_device_is_deleted(
    stack: DeviceStack, user: Principal
) -> None:
    """A live name → ConflictError and nothing new; after deletion the name is free."""
    async with stack.engine.worker(concurrency=8):
        first = await stack.service.create_device(user, "phone", SMALL)
        await stack.wait(first.saga_id)
        with pytest.raises(ConflictError) as refused:
            await stack.service.create_device(user, "phone", SMALL)
        assert refused.value.code == "duplicate_name"
        assert len(await stack.runs_of(user.user_id)) == 1
        assert (await stack.quota(user.user_id)).used.devices == 1
        deletion = await stack.service.delete_device(user, first.device.id)
        await stack.wait(deletion.saga_id)
        again = await stack.service.create_device(user, "phone", SMALL)
        assert (await stack.wait(again.saga_id)).status is SagaStatus.COMPLETED


async def test_other_users_device_is_invisible(
    stack: DeviceStack, user: Principal, unique: str
) -> None:
    """Another user gets 404 on get, delete, stop and start; admins see everything."""
    stranger = Principal(f"stranger-{unique}")
    async with stack.engine.worker(concurrency=8):
        created = await stack.service.create_device(user, "phone", SMALL)
        await stack.wait(created.saga_id)
    device_id = created.device.id
    for action in (
        stack.service.get_device,
        stack.service.delete_device,
        stack.service.stop_device,
        stack.service.start_device,
    ):
        with pytest.raises(NotFoundError):
            await action(stranger, device_id)
    assert await stack.service.list_devices(stranger) == []
    with pytest.raises(ForbiddenError):
        await stack.service.list_devices(stranger, owner_id=user.user_id)
    assert (await stack.device(device_id)).status is DeviceStatus.RUNNING
    assert (await stack.service.get_device(ADMIN, device_id)).owner_id == user.user_id


async def test_only_admins_set_quotas(stack: DeviceStack, user: Principal) -> None:
    """Users read their own quota; setting one needs an admin; lowering keeps usage."""
    with pytest.raises(ForbiddenError):
        await stack.service.set_quota(user, user.user_id, limits(devices_=100))
    with pytest.raises(ForbiddenError):
        await stack.service.get_quota(user, "someone-else")
    mine = await stack.service.get_quota(user)
    assert mine.limits.max_devices == stack.config.default_quota.max_devices
    assert mine.available.devices == mine.limits.max_devices
    updated = await stack.service.set_quota(ADMIN, user.user_id, limits(devices_=0))
    assert updated.limits.max_devices == 0
    with pytest.raises(QuotaExceededError):
        await stack.service.create_device(user, "phone", SMALL)
