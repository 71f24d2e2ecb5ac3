"""The soak's users: demo sagas, payments and refunds, APK uploads, devices under quotas.

Each operation is one user's story over HTTP, driven by its own seeded generator:

* ``demo`` — a demo saga, some asked to fail before the pivot (COMPENSATED) or after it
  (FAILED, with the reason);
* ``payment`` — an order paid with the sandbox (fault rates on) or Stripe (localstripe behind
  the fault proxy), then a full refund, several partial ones in a row, three at once on the
  same payment (at most one may be accepted at a time), or one sent twice with the same key;
* ``upload`` — an APK (a few of them large: multipart), sometimes a second version, sometimes
  the same version again (refused), sometimes the same request twice;
* ``device`` — a device created (two at once now and then, against a quota of two) and, unless
  it is one of the last, deleted once it runs;
* ``install`` — applications put on a user's running device, upgraded, raced, uninstalled,
  and the device deleted with them (:mod:`tests.chaos.soak_installs`).

A repeated Idempotency-Key must answer the first request's saga (:meth:`Client.started`).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable

from tests.chaos.soak_client import Client
from tests.chaos.soak_installs import install
from tests.chaos.soak_plan import Operation, Plan
from tests.support.apk_builder import build_apk_bytes
from tests.support.apps_http import multipart

MiB = 1024 * 1024
Story = Callable[[Client, Operation, random.Random, "Context"], Awaitable[None]]


class Context:
    """What the stories share: the run's tag (package names) and which uploads are large."""

    def __init__(self, schedule: Plan) -> None:
        self.tag = uuid.uuid4().hex[:8]
        uploads = [op.number for op in schedule.operations if op.kind == "upload"]
        picker = random.Random(schedule.seed)
        self.large = set(picker.sample(uploads, min(schedule.profile.large_uploads, len(uploads))))
        self.last_quarter = 0.75 * schedule.profile.window


async def demo(client: Client, op: Operation, rng: random.Random, _: Context) -> None:
    """A demo saga; 8 % fail before the pivot, 4 % after it; 15 % sent twice."""
    body: dict[str, object] = {"work_ms": rng.choice([0, 10, 50, 200])}
    roll = rng.random()
    if roll < 0.08:
        body["fail_step"] = "PREPARE"
    elif roll < 0.12:
        body["fail_step"] = "NOTIFY"
    await client.started(
        "POST", "/demo", op.user, route="POST /demo", replay=rng.random() < 0.15, json=body
    )


async def payment(client: Client, op: Operation, rng: random.Random, _: Context) -> None:
    """Pay an order, then refund it in one of four patterns."""
    amount = rng.randrange(1000, 10000, 100)
    order = await client.send(
        "POST", "/orders", op.user, route="POST /orders", allowed=(201,),
        json={"amount": amount, "currency": "EUR", "description": f"soak {op.number}"},
    )  # fmt: skip
    provider = rng.choice(["sandbox", "stripe"])
    paid = await _pay(client, op.user, order.json()["id"], provider)
    if paid is None:
        return
    pattern = rng.choice(["full", "partial", "concurrent", "replay"])
    payment_id = paid["id"]
    if pattern == "full":
        await _refund(client, op.user, payment_id, amount)
    elif pattern == "replay":
        await _refund(client, op.user, payment_id, amount // 2, replay=True)
    elif pattern == "concurrent":
        tries = [amount // 2, amount // 3, amount]
        await asyncio.gather(*(_refund(client, op.user, payment_id, a) for a in tries))
    else:
        left = amount
        for _ in range(rng.randrange(2, 4)):
            part = rng.randrange(100, max(left // 2, 101), 100)
            saga_id = await _refund(client, op.user, payment_id, part)
            if saga_id is None or await client.saga_until_terminal(op.user, saga_id) != "COMPLETED":
                return
            left -= part


async def _pay(client: Client, user: str, order_id: str, provider: str) -> dict[str, str] | None:
    """Pay; a 503 (the provider's answer unknown) is retried a few times, as the API says."""
    for _ in range(6):
        response = await client.send(
            "POST", f"/orders/{order_id}/pay", user, route="POST /orders/{id}/pay",
            allowed=(201, 409, 503), retry_unavailable=False, json={"provider": provider},
        )  # fmt: skip
        if response.status_code == 201:
            body: dict[str, str] = response.json()
            return body if body["status"] == "SUCCESS" else None
        if response.status_code == 409:
            return None  # settled meanwhile (the reconcile, or an earlier attempt)
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
    return None  # left PENDING: the payment reconcile settles it


async def _refund(
    client: Client, user: str, payment_id: str, amount: int, *, replay: bool = False
) -> str | None:
    """Request a refund; 409 (one in flight) and 422 (more than is left) are fair answers."""
    response = await client.started(
        "POST", f"/payments/{payment_id}/refunds", user, route="POST /payments/{id}/refunds",
        replay=replay, allowed=(202, 409, 422), json={"amount": amount},
    )  # fmt: skip
    return str(response.json()["saga_id"]) if response.status_code == 202 else None


async def upload(client: Client, op: Operation, rng: random.Random, ctx: Context) -> None:
    """Upload an APK; sometimes a second version, or the same version again."""
    package = f"com.soak{ctx.tag}.app{op.number}"
    size = rng.randrange(6 * MiB, 12 * MiB) if op.number in ctx.large else rng.randrange(0, 300_000)
    await _upload(client, op.user, package, 1, size, replay=rng.random() < 0.1)
    roll = rng.random()
    if roll < 0.15:
        await _upload(client, op.user, package, 2, rng.randrange(0, 100_000))
    elif roll < 0.25:
        await _upload(client, op.user, package, 1, 0)  # a duplicate: 409, or its saga undone


async def _upload(
    client: Client, user: str, package: str, version: int, size: int, *, replay: bool = False
) -> None:
    data = await asyncio.to_thread(
        build_apk_bytes, package=package, version_code=version, big_asset_size=size
    )
    body, content_type = multipart(data)
    await client.started(
        "POST", "/apps", user, route="POST /apps", replay=replay, allowed=(202, 409),
        content=body, headers={"Content-Type": content_type},
    )  # fmt: skip


async def device(client: Client, op: Operation, rng: random.Random, ctx: Context) -> None:
    """Create a device (sometimes two at once: the quota allows two) and delete it once up."""
    count = 2 if rng.random() < 0.3 else 1
    await asyncio.gather(*(_device(client, op, i, rng, ctx) for i in range(count)))


async def _device(client: Client, op: Operation, i: int, rng: random.Random, ctx: Context) -> None:
    name = f"d{op.number}-{i}"
    device_id = await client.new_device(op.user, name, replay=rng.random() < 0.1)
    if device_id is None:
        return
    status = await client.device_until(op.user, device_id, {"RUNNING", "ERROR", "STOPPED"})
    if status == "ERROR" or (op.at > ctx.last_quarter and rng.random() < 0.5):
        return  # creation undone, or kept: the checks compare live devices with the quota
    await client.delete_device(op.user, device_id)


STORIES: dict[str, Story] = {
    "demo": demo, "payment": payment, "upload": upload, "device": device, "install": install,
}  # fmt: skip


async def run_load(client: Client, schedule: Plan, started: float) -> None:
    """Start each operation at its moment (at most ``concurrency`` at once); wait for all."""
    ctx = Context(schedule)
    gate = asyncio.Semaphore(schedule.profile.concurrency)
    loop = asyncio.get_running_loop()

    async def one(op: Operation) -> None:
        async with gate:
            try:
                await STORIES[op.kind](client, op, random.Random(op.seed), ctx)
            except TimeoutError:
                pass  # already counted as unexpected by the client
            except Exception as error:  # a story must never take the others down
                client.tally.unexpected.append(f"{op.kind} {op.number}: {error!r}")

    tasks = []
    for op in schedule.operations:
        # The seeded arrival schedule: the operation starts at its moment of the window.
        await asyncio.sleep(max(0.0, started + op.at - loop.time()))
        tasks.append(asyncio.create_task(one(op)))
    await asyncio.gather(*tasks)
