"""GET /orders, /payments, /refunds: own resources (admins: all), filters, pages like /sagas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.domain import Role
from tests.support.billing_harness import Billing
from tests.support.billing_http import billing_client, headers

LISTS = ("/orders", "/payments", "/refunds")


@pytest.fixture
async def client(billing: Billing, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with billing_client(billing, tmp_path / "var") as http:
        yield http


async def order(client: httpx.AsyncClient, who: dict[str, str], amount: int) -> dict[str, Any]:
    body = {"amount": amount, "currency": "EUR", "description": f"order of {amount}"}
    response = await client.post("/orders", json=body, headers=who)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def pay(client: httpx.AsyncClient, who: dict[str, str], order_id: str) -> dict[str, Any]:
    response = await client.post(f"/orders/{order_id}/pay", json={}, headers=who)
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def items(
    client: httpx.AsyncClient, url: str, who: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(url, params=params, headers=who)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


async def test_a_user_finds_their_orders_payments_and_refunds_again(
    client: httpx.AsyncClient, unique: str
) -> None:
    """Own resources only, newest first, filtered by status, order and payment."""
    alice, bob = headers(f"alice-{unique}"), headers(f"bob-{unique}")
    first, second, third = [await order(client, alice, amount) for amount in (100, 200, 300)]
    await order(client, bob, 999)
    paid = [await pay(client, alice, o["id"]) for o in (first, second)]
    await client.post(f"/orders/{third['id']}/cancel", headers=alice)
    refund = await client.post(
        f"/payments/{paid[1]['id']}/refunds", json={"amount": 50, "reason": "r"}, headers=alice
    )
    assert refund.status_code == 202, refund.text

    orders = await items(client, "/orders", alice)
    assert [o["id"] for o in orders] == [third["id"], second["id"], first["id"]]
    cancelled = await items(client, "/orders", alice, status="CANCELLED")
    assert [o["id"] for o in cancelled] == [third["id"]]
    payments = await items(client, "/payments", alice)
    assert [p["id"] for p in payments] == [paid[1]["id"], paid[0]["id"]]
    assert [p["id"] for p in await items(client, "/payments", alice, order_id=first["id"])] == [
        paid[0]["id"]
    ]
    assert await items(client, "/payments", alice, status="FAILED") == []
    refunds = await items(client, "/refunds", alice)
    assert [r["id"] for r in refunds] == [refund.json()["refund"]["id"]]
    assert refunds[0]["status"] == "PENDING"
    assert await items(client, "/refunds", alice, payment_id=paid[0]["id"]) == []
    assert await items(client, "/refunds", alice, status="SUCCEEDED") == []
    assert [o["amount"] for o in await items(client, "/orders", bob)] == [999]
    assert await items(client, "/payments", bob) == []


def _at(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["created_at"])


async def test_pages_and_time_windows(client: httpx.AsyncClient, unique: str) -> None:
    """limit/offset/next_offset like /sagas; created_after is inclusive, created_before not."""
    alice = headers(f"alice-{unique}")
    made = [await order(client, alice, amount) for amount in (1, 2, 3, 4, 5)]
    newest_first = [o["id"] for o in reversed(made)]
    page = (await client.get("/orders", params={"limit": 2}, headers=alice)).json()
    assert ([o["id"] for o in page["items"]], page["next_offset"]) == (newest_first[:2], 2)
    last = (await client.get("/orders", params={"limit": 2, "offset": 4}, headers=alice)).json()
    assert ([o["id"] for o in last["items"]], last["next_offset"]) == (newest_first[4:], None)
    assert (last["limit"], last["offset"]) == (2, 4)

    cut = made[2]["created_at"]
    after = await items(client, "/orders", alice, created_after=cut)
    before = await items(client, "/orders", alice, created_before=cut)
    assert {o["id"] for o in after} == {o["id"] for o in made if _at(o) >= _at(made[2])}
    assert {o["id"] for o in before} == {o["id"] for o in made if _at(o) < _at(made[2])}
    assert made[2]["id"] in {o["id"] for o in after}
    assert len(after) + len(before) == 5


@pytest.mark.parametrize("url", LISTS)
async def test_users_get_403_for_others_and_admins_see_everyone(
    client: httpx.AsyncClient, unique: str, url: str
) -> None:
    """A user naming another user is refused (never silently given their own list)."""
    alice, bob = headers(f"alice-{unique}"), headers(f"bob-{unique}")
    admin = headers("root", Role.ADMIN)
    for who in (alice, bob):
        o = await order(client, who, 700)
        payment = await pay(client, who, o["id"])
        await client.post(f"/payments/{payment['id']}/refunds", json={"amount": 7}, headers=who)
    refused = await client.get(url, params={"user_id": f"bob-{unique}"}, headers=alice)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    mine = await items(client, url, alice, user_id=f"alice-{unique}")
    assert {i["user_id"] for i in mine} == {f"alice-{unique}"}
    bobs = await items(client, url, admin, user_id=f"bob-{unique}")
    assert {i["user_id"] for i in bobs} == {f"bob-{unique}"}
    everyone = await items(client, url, admin, limit=200)
    assert {f"alice-{unique}", f"bob-{unique}"} <= {i["user_id"] for i in everyone}


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize(
    "params",
    [{"status": "NOPE"}, {"limit": 0}, {"limit": 201}, {"created_after": "yesterday"}],
    ids=["status", "limit-0", "limit-201", "time"],
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, unique: str, url: str, params: dict[str, Any]
) -> None:
    response = await client.get(url, params=params, headers=headers(f"alice-{unique}"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
