"""Search by saga id or by the id of a business resource (payment, refund, app, device).

A business id is resolved **through the service that owns it**, by primary key, to the saga
ids that resource records (a refund's ``saga_id``, an app's ``saga_id``, a device's
``create_saga_id``/``delete_saga_id``, a payment's refunds); the runs are then read by id.
Every step is an index lookup, so it costs the same at 100,000 runs as at 10, adds nothing to
the engine's write path (no key table to fill on every start) and never scans saga data. The
services check visibility themselves: a user's search finds only what the user may see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudphone.domain import DomainError, Principal
from cloudphone.platform import Platform
from cloudphone.saga import SagaNotFoundError

MAX_QUERY = 200


@dataclass(frozen=True)
class Match:
    """A resource the search found.

    Attributes:
        kind: ``saga``, ``payment``, ``refund``, ``app`` or ``device``.
        resource_id: Its id (what was searched).
        saga_ids: The runs it leads to.
    """

    kind: str
    resource_id: str
    saga_ids: tuple[str, ...]


Resolver = Callable[[Platform, Principal, str], Awaitable[tuple[str, ...]]]
"""Saga ids of the resource with this id, through its service (raises NotFoundError)."""


async def _saga(platform: Platform, principal: Principal, query: str) -> tuple[str, ...]:
    run = await platform.engine.get(query)
    if not principal.can_see(run.started_by or ""):
        raise SagaNotFoundError(query)  # never tell a user that someone else's run exists
    return (run.id,)


async def _payment(platform: Platform, principal: Principal, query: str) -> tuple[str, ...]:
    refunds = await platform.billing.list_refunds(principal, query)
    return tuple(refund.saga_id for refund in refunds)


async def _refund(platform: Platform, principal: Principal, query: str) -> tuple[str, ...]:
    return ((await platform.billing.get_refund(principal, query)).saga_id,)


async def _app(platform: Platform, principal: Principal, query: str) -> tuple[str, ...]:
    return ((await platform.apps.get_app(principal, query)).saga_id,)


async def _device(platform: Platform, principal: Principal, query: str) -> tuple[str, ...]:
    device = await platform.devices.get_device(principal, query)
    return tuple(i for i in (device.create_saga_id, device.delete_saga_id) if i)


RESOLVERS: dict[str, Resolver] = {
    "saga": _saga,
    "payment": _payment,
    "refund": _refund,
    "app": _app,
    "device": _device,
}
"""Each kind of id the search understands (a new service adds its resolver here)."""


async def resolve(platform: Platform, principal: Principal, query: str) -> list[Match]:
    """Every resource with id ``query`` that ``principal`` may see, with its saga ids."""
    query = query.strip()
    if not query or len(query) > MAX_QUERY:
        return []
    kinds = list(RESOLVERS)
    found = await asyncio.gather(
        *(_attempt(RESOLVERS[kind], platform, principal, query) for kind in kinds)
    )
    return [
        Match(kind, query, saga_ids)
        for kind, saga_ids in zip(kinds, found, strict=True)
        if saga_ids is not None
    ]


async def _attempt(
    resolver: Resolver, platform: Platform, principal: Principal, query: str
) -> tuple[str, ...] | None:
    try:
        return await resolver(platform, principal, query)
    except (DomainError, SagaNotFoundError):
        return None
