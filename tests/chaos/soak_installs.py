"""The soak's installs: users put applications on their own running devices, and take them off.

One ``install`` operation is one user's story over HTTP, driven by its own seeded generator:

1. an APK uploaded by the user (or, one time in five, by another user and published to the
   catalog by an admin), waited until AVAILABLE;
2. a device of the user's created and waited until RUNNING (a quota refusal is waited out);
3. the application installed: sometimes the same request twice (one ``Idempotency-Key``: 200
   with the first run), sometimes two installs of it at once (one is accepted, the other
   answers 409 ``installation_busy``);
4. sometimes an upgrade (a second version uploaded and installed over the first), then
   sometimes an uninstall;
5. the device deleted with its applications, now and then while one more install runs on it
   (202 or 409 ``device_not_running``), unless it is one of the last: those stay, and the
   checks ask them over ADB what they have.

The story's users are ``<user>-apps0`` and ``<user>-apps1`` (two per user of the plan), so their
devices do not compete with the ``device`` stories for the quota of two, and seldom with
each other. A device being restarted (its agent
SIGKILLed) or deleted answers 409 ``device_not_running``: the user waits until it runs again
and asks again. Any other refusal is unexpected.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import httpx

from cloudphone.domain import Role
from tests.chaos.soak_client import Client, refusal, saga_of
from tests.chaos.soak_plan import Operation
from tests.support.apk_builder import build_apk_bytes
from tests.support.apps_http import multipart
from tests.support.server import auth

if TYPE_CHECKING:
    from tests.chaos.soak_load import Context

ADMIN = auth("soak-admin", Role.ADMIN)
INSTALL = "POST /devices/{id}/apps"
UNINSTALL = "DELETE /devices/{id}/apps/{package}"
BUSY = "installation_busy"
NOT_RUNNING = "device_not_running"
QUOTA_WAIT = 30.0
"""Longest a user waits for the quota to let one more device in."""


def owner(op: Operation) -> str:
    """The story's user: one of two per plan's user, with quotas of their own."""
    return f"{op.user}-apps{op.number % 2}"


async def install(client: Client, op: Operation, rng: random.Random, ctx: Context) -> None:
    """Upload, create a device, install (replayed or raced), maybe upgrade and uninstall, delete."""
    user = owner(op)
    catalog = rng.random() < 0.2
    uploader = f"soak-catalog{op.number % 3}" if catalog else user
    package = f"com.soak{ctx.tag}.inst{op.number}"
    app = await _available(client, uploader, package, 1, publish=catalog)
    device_id = await _running_device(client, user, f"i{op.number}") if app else None
    if app is None or device_id is None:
        return
    roll = rng.random()
    if roll < 0.2:
        installed = await _race(client, user, device_id, app)
    else:
        installed = await _install(client, user, device_id, app, replay=roll < 0.35)
    if installed and rng.random() < 0.35:
        second = await _available(client, uploader, package, 2, publish=catalog)
        if second is not None and await _install(client, user, device_id, second):
            app = second
    if installed and rng.random() < 0.3:
        await _uninstall(client, user, device_id, package)
    if op.at > ctx.last_quarter and rng.random() < 0.5:
        return  # kept with its applications: the checks compare them with the device
    if rng.random() < 0.25:
        # One more install (a reinstall) while the device goes: either may come first.
        await asyncio.gather(
            _install(client, user, device_id, app, wait_running=False),
            client.delete_device(user, device_id),
        )
    else:
        await client.delete_device(user, device_id)


async def _available(
    client: Client, user: str, package: str, version: int, *, publish: bool
) -> str | None:
    """Upload ``package`` at ``version``; its id once AVAILABLE (published if asked), else None."""
    data = await asyncio.to_thread(
        build_apk_bytes, package=package, version_code=version, version_name=f"{version}.0"
    )
    body, content_type = multipart(data)
    posted = await client.started(
        "POST", "/apps", user, route="POST /apps", replay=False,
        content=body, headers={"Content-Type": content_type},
    )  # fmt: skip
    if posted.status_code != 202:
        return None
    if await client.saga_until_terminal(user, posted.json()["saga_id"]) != "COMPLETED":
        client.tally.seen["install story: upload undone (S3 away)"] += 1
        return None
    app_id = str(posted.json()["application"]["id"])
    if publish:
        await client.send(
            "POST", f"/apps/{app_id}/publish", "soak-admin", route="POST /apps/{id}/publish",
            allowed=(200,), headers=ADMIN,
        )  # fmt: skip
    return app_id


async def _running_device(client: Client, user: str, name: str) -> str | None:
    """A new device of ``user``'s, RUNNING; None if it did not come up."""
    deadline = time.monotonic() + QUOTA_WAIT
    while (device_id := await client.new_device(user, name)) is None:
        if time.monotonic() > deadline:
            client.tally.seen["install story: no quota for a device"] += 1
            return None
        await asyncio.sleep(1.0)  # a user's back-off: the quota frees when a device goes
    status = await client.device_until(user, device_id, {"RUNNING", "ERROR", "STOPPED"})
    return device_id if status == "RUNNING" else None


async def _ask_install(
    client: Client, user: str, device_id: str, app_id: str, *, replay: bool = False
) -> httpx.Response:
    response = await client.started(
        "POST", f"/devices/{device_id}/apps", user, route=INSTALL, replay=replay,
        allowed=(200, 202, 409), json={"app_id": app_id},
    )  # fmt: skip
    if response.status_code == 409 and refusal(response) not in (BUSY, NOT_RUNNING):
        client.tally.unexpected.append(f"{INSTALL} on {device_id}: {response.text[:300]}")
    return response


async def _install(
    client: Client,
    user: str,
    device_id: str,
    app_id: str,
    *,
    replay: bool = False,
    wait_running: bool = True,
) -> bool:
    """Install and wait for the run; True if it COMPLETED.

    A 409 ``device_not_running`` (restarting) is asked again once the device runs, unless
    ``wait_running`` is off (the device is being deleted: the refusal is the answer).
    """
    for _ in range(10):
        response = await _ask_install(client, user, device_id, app_id, replay=replay)
        if response.status_code != 409:
            return await client.saga_until_terminal(user, saga_of(response.json())) == "COMPLETED"
        if refusal(response) == BUSY:
            client.tally.unexpected.append(f"{INSTALL} on {device_id}: busy with no other run")
            return False
        if not wait_running or not await _runs_again(client, user, device_id):
            return False
    client.tally.unexpected.append(f"{INSTALL} on {device_id}: not running 10 times")
    return False


async def _race(client: Client, user: str, device_id: str, app_id: str) -> bool:
    """Two installs of one application at once: one accepted, the other ``installation_busy``."""
    answers = await asyncio.gather(
        *(_ask_install(client, user, device_id, app_id) for _ in range(2))
    )
    codes = sorted(str(a.status_code) if a.status_code != 409 else refusal(a) for a in answers)
    accepted = [saga_of(a.json()) for a in answers if a.status_code in (200, 202)]
    if codes == ["202", BUSY]:
        client.tally.seen["install race: one accepted, one installation_busy"] += 1
    elif codes == ["202", "202"]:
        # Allowed only if the first run was over before the second request reserved.
        client.tally.seen["install race: both accepted (one after the other)"] += 1
    elif BUSY in codes and not accepted:
        client.tally.unexpected.append(f"install race on {device_id}: {codes}, none accepted")
    done = [await client.saga_until_terminal(user, saga_id) for saga_id in accepted]
    return "COMPLETED" in done


async def _uninstall(client: Client, user: str, device_id: str, package: str) -> None:
    """Uninstall and wait for the run (asked again once a restarting device runs)."""
    for _ in range(10):
        response = await client.send(
            "DELETE", f"/devices/{device_id}/apps/{package}", user, route=UNINSTALL,
            allowed=(202, 409),
        )  # fmt: skip
        if response.status_code == 202:
            saga_id = str(response.json()["saga_id"])
            client.tally.saga_ids.add(saga_id)
            await client.saga_until_terminal(user, saga_id)
            return
        if refusal(response) != NOT_RUNNING:
            client.tally.unexpected.append(f"{UNINSTALL} on {device_id}: {response.text[:300]}")
            return
        if not await _runs_again(client, user, device_id):
            return
    client.tally.unexpected.append(f"{UNINSTALL} on {device_id}: not running 10 times")


async def _runs_again(client: Client, user: str, device_id: str) -> bool:
    """Wait (polling) until the device is RUNNING again; False if it ended otherwise."""
    done = {"RUNNING", "ERROR", "STOPPED", "DELETED"}
    return await client.device_until(user, device_id, done, within=30) == "RUNNING"
