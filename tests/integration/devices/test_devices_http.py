"""The devices API over HTTP (in-process ASGI): status codes, bodies, nothing created on 4xx."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.domain import Principal, Role
from tests.support.devices_http import devices_client, headers
from tests.support.devices_stack import DeviceStack, wait_all

SPEC = {"cpu": 0.5, "memory_mb": 256, "storage_mb": 1024, "resolution": "720x1280", "dpi": 320}


@pytest.fixture
async def client(stack: DeviceStack, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with devices_client(stack, tmp_path / "var") as http:
        yield http


@pytest.fixture
def me(user: Principal) -> dict[str, str]:
    return headers(user.user_id)


@pytest.fixture
def admin() -> dict[str, str]:
    return headers("root", Role.ADMIN)


async def create(
    client: httpx.AsyncClient, who: dict[str, str], name: str, **spec: Any
) -> httpx.Response:
    return await client.post("/devices", json={"name": name, **SPEC, **spec}, headers=who)


async def set_max_devices(
    client: httpx.AsyncClient, admin: dict[str, str], user: str, count: int
) -> None:
    body = {
        "max_devices": count, "max_cpu_cores": 64, "max_memory_mb": 65536,
        "max_storage_mb": 262144, "device_max_cpu_cores": 4, "device_max_memory_mb": 8192,
        "device_max_storage_mb": 32768,
    }  # fmt: skip
    response = await client.put(f"/admin/quotas/{user}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["limits"]["max_devices"] == count


async def test_create_read_list_delete_over_http(
    stack: DeviceStack, client: httpx.AsyncClient, me: dict[str, str]
) -> None:
    """202 + CREATING; same key → 200 same; RUNNING with ADB; DELETE twice → same saga; DELETED."""
    keyed = {**me, "Idempotency-Key": "create-1"}
    first = await create(client, keyed, "phone")
    assert first.status_code == 202, first.text
    body = first.json()
    device_id = body["device"]["id"]
    assert body["device"]["status"] == "CREATING"
    assert body["device"]["spec"]["cpu"] == 0.5
    assert first.headers["location"] == f"/devices/{device_id}"
    again = await create(client, keyed, "phone")
    assert again.status_code == 200
    assert (again.json()["saga_id"], again.json()["device"]["id"]) == (body["saga_id"], device_id)
    changed = await create(client, keyed, "other-phone")
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"

    async with stack.engine.worker(concurrency=8):
        await stack.wait(body["saga_id"])
        got = (await client.get(f"/devices/{device_id}", headers=me)).json()
        assert got["status"] == "RUNNING"
        assert got["adb_host"] == "127.0.0.1"
        assert isinstance(got["adb_port"], int)
        listed = (await client.get("/devices", headers=me)).json()
        assert [d["id"] for d in listed["items"]] == [device_id]
        quota = (await client.get("/quotas/me", headers=me)).json()
        assert quota["used"] == {
            "devices": 1,
            "cpu_cores": 0.5,
            "memory_mb": 256,
            "storage_mb": 1024,
        }

        deleted = await client.delete(f"/devices/{device_id}", headers=me)
        assert deleted.status_code == 202, deleted.text
        twice = await client.delete(f"/devices/{device_id}", headers=me)
        assert twice.status_code == 202
        assert twice.json()["saga_id"] == deleted.json()["saga_id"]
        await stack.wait(deleted.json()["saga_id"])

    assert (await client.get(f"/devices/{device_id}", headers=me)).json()["status"] == "DELETED"
    assert (await client.get("/devices", headers=me)).json()["items"] == []
    everything = await client.get("/devices", params={"include_deleted": "true"}, headers=me)
    assert [d["status"] for d in everything.json()["items"]] == ["DELETED"]
    quota = (await client.get("/quotas/me", headers=me)).json()
    assert quota["used"]["devices"] == 0
    assert quota["available"]["devices"] == quota["limits"]["max_devices"]


async def test_fifty_concurrent_posts_for_quota_five(
    stack: DeviceStack,
    client: httpx.AsyncClient,
    me: dict[str, str],
    admin: dict[str, str],
    user: Principal,
) -> None:
    """50 concurrent POST /devices, quota 5: 5 get 202 and run, 45 get 409 quota_exceeded."""
    await set_max_devices(client, admin, user.user_id, 5)
    async with stack.engine.worker(concurrency=16):
        responses = await asyncio.gather(*(create(client, me, f"p-{i}") for i in range(50)))
        accepted = [r for r in responses if r.status_code == 202]
        refused = [r for r in responses if r.status_code != 202]
        await wait_all(stack, [r.json()["saga_id"] for r in accepted])

    assert len(accepted) == 5
    assert len(refused) == 45
    for response in refused:
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert re.search(
            r"devices: \d+ used \+ \d+ reserved \+ 1 requested > limit 5", error["message"]
        ), error
    listed = (await client.get("/devices", headers=me)).json()["items"]
    assert sorted(d["status"] for d in listed) == ["RUNNING"] * 5
    quota = (await client.get("/quotas/me", headers=me)).json()
    assert (quota["used"]["devices"], quota["reserved"]["devices"]) == (5, 0)
    assert len(await stack.ports_of_user(user.user_id)) == 10
    assert len(await stack.containers()) == 5
    assert len(await stack.runs_of(user.user_id)) == 5
    # The 45 refused requests started sagas that rolled back with them: never counted.
    started = stack.engine.metrics.registry.get_sample_value(
        "saga_started_total", {"saga_type": "device_create"}
    )
    assert started == 5


async def test_quota_refusals_speak_cores_like_the_api(
    client: httpx.AsyncClient, me: dict[str, str], admin: dict[str, str], user: Principal
) -> None:
    """409 and 422 messages name ``cpu_cores`` in cores, as the request and quota do."""
    body = {
        "max_devices": 5, "max_cpu_cores": 1, "max_memory_mb": 65536, "max_storage_mb": 262144,
        "device_max_cpu_cores": 2.5, "device_max_memory_mb": 8192, "device_max_storage_mb": 32768,
    }  # fmt: skip
    assert (await client.put(f"/admin/quotas/{user.user_id}", json=body, headers=admin)).is_success
    over_quota = await create(client, me, "phone", cpu=1.5)
    assert over_quota.status_code == 409, over_quota.text
    message = over_quota.json()["error"]["message"]
    assert "cpu_cores: 0 used + 0 reserved + 1.5 requested > limit 1" in message
    over_device = await create(client, me, "phone", cpu=3)
    assert over_device.status_code == 422, over_device.text
    message += over_device.json()["error"]["message"]
    assert "cpu_cores 3 exceeds the per-device maximum 2.5" in message
    assert "millis" not in message


async def test_concurrent_repeats_of_one_key_answer_like_sequential_ones(
    stack: DeviceStack, client: httpx.AsyncClient, me: dict[str, str], user: Principal
) -> None:
    """Eight racing POSTs with one Idempotency-Key: one 202, seven 200, one device."""
    keyed = {**me, "Idempotency-Key": "race"}
    responses = await asyncio.gather(*(create(client, keyed, "phone") for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202], [
        r.text for r in responses
    ]
    assert len({r.json()["saga_id"] for r in responses}) == 1
    assert len(await stack.devices_of(user.user_id)) == 1
    async with stack.engine.worker(concurrency=4):
        await stack.wait(responses[0].json()["saga_id"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"cpu": 16}, 422, "spec_over_device_maximum"),
        ({"memory_mb": 100_000}, 422, "spec_over_device_maximum"),
        ({"resolution": "huge"}, 422, "invalid_spec"),
        ({"android_version": "4"}, 422, "invalid_spec"),
        ({"name": "no spaces allowed"}, 422, "invalid_name"),
        ({"gpu": 1}, 422, "invalid_request"),
        ({"cpu": -1}, 422, "invalid_request"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_created(
    stack: DeviceStack,
    client: httpx.AsyncClient,
    me: dict[str, str],
    user: Principal,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Every bad request answers its 4xx with a code; no device, saga, quota or port appears."""
    response = await client.post("/devices", json={"name": "phone", **SPEC, **body}, headers=me)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await stack.devices_of(user.user_id) == []
    assert await stack.runs_of(user.user_id) == []
    assert await stack.reservations(user.user_id) == {}
    assert await stack.containers() == []


async def test_duplicate_name_and_other_users_device(
    stack: DeviceStack, client: httpx.AsyncClient, me: dict[str, str], unique: str
) -> None:
    """Duplicate name → 409; another user gets 404 everywhere; users cannot set quotas."""
    first = await create(client, me, "phone")
    assert first.status_code == 202
    duplicate = await create(client, me, "phone")
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_name"
    device_id = first.json()["device"]["id"]
    stranger = headers(f"stranger-{unique}")
    assert (await client.get(f"/devices/{device_id}", headers=stranger)).status_code == 404
    assert (await client.delete(f"/devices/{device_id}", headers=stranger)).status_code == 404
    for action in ("stop", "start"):
        url = f"/devices/{device_id}/{action}"
        assert (await client.post(url, headers=stranger)).status_code == 404
    assert (await client.get("/devices", headers=stranger)).json()["items"] == []
    busy = await client.delete(f"/devices/{device_id}", headers=me)
    assert busy.status_code == 409  # still CREATING: no worker runs
    assert busy.json()["error"]["code"] == "device_busy"
    forbidden = await client.put("/admin/quotas/x", json={}, headers=me)
    assert forbidden.status_code == 403
    async with stack.engine.worker(concurrency=4):
        await stack.wait(first.json()["saga_id"])


async def test_stop_and_start_over_http(
    stack: DeviceStack, client: httpx.AsyncClient, me: dict[str, str]
) -> None:
    """POST stop → STOPPED; POST start → RUNNING again."""
    created = await create(client, me, "phone")
    async with stack.engine.worker(concurrency=4):
        await stack.wait(created.json()["saga_id"])
    device_id = created.json()["device"]["id"]
    stopped = await client.post(f"/devices/{device_id}/stop", headers=me)
    assert (stopped.status_code, stopped.json()["status"]) == (200, "STOPPED")
    started = await client.post(f"/devices/{device_id}/start", headers=me)
    assert (started.status_code, started.json()["status"]) == (200, "RUNNING")


async def test_unknown_list_parameters_are_refused(
    client: httpx.AsyncClient, me: dict[str, str]
) -> None:
    """A misspelt filter is a 422, never a silently wider list."""
    response = await client.get("/devices", params={"owner": "someone"}, headers=me)
    assert response.status_code == 422
    assert "'owner'" in response.json()["error"]["message"]
