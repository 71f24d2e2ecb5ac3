"""The billing API over HTTP (in-process ASGI): status codes, bodies, nothing written on 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.domain import Role
from tests.support.billing_harness import Billing
from tests.support.billing_http import billing_client, headers


@pytest.fixture
async def client(billing: Billing, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with billing_client(billing, tmp_path / "var") as http:
        yield http


@pytest.fixture
def alice(unique: str) -> dict[str, str]:
    return headers(f"alice-{unique}")


@pytest.fixture
def bob(unique: str) -> dict[str, str]:
    return headers(f"bob-{unique}")


async def paid(
    client: httpx.AsyncClient, who: dict[str, str], amount: int = 5000
) -> dict[str, Any]:
    order = await client.post(
        "/orders", json={"amount": amount, "currency": "eur", "description": "1 month"}, headers=who
    )
    assert order.status_code == 201, order.text
    assert order.json()["status"] == "PENDING"
    payment = await client.post(
        f"/orders/{order.json()['id']}/pay", json={"provider": "sandbox"}, headers=who
    )
    assert payment.status_code == 201, payment.text
    body: dict[str, Any] = payment.json()
    assert (body["status"], body["currency"], body["amount"]) == ("SUCCESS", "EUR", amount)
    return body


async def test_refund_over_http_202_then_200_for_the_same_key(
    billing: Billing, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """POST refunds → 202 {saga_id, refund, payment}; same key → 200 same; then REFUNDED."""
    payment = await paid(client, alice)
    url = f"/payments/{payment['id']}/refunds"
    keyed = {**alice, "Idempotency-Key": "refund-1"}
    first = await client.post(url, json={"amount": 5000, "reason": "cancelled"}, headers=keyed)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["refund"]["status"] == "PENDING"
    assert body["payment"]["id"] == payment["id"]
    assert first.headers["location"] == f"/refunds/{body['refund']['id']}"
    again = await client.post(url, json={"amount": 5000, "reason": "cancelled"}, headers=keyed)
    assert again.status_code == 200
    assert (again.json()["saga_id"], again.json()["refund"]["id"]) == (
        body["saga_id"],
        body["refund"]["id"],
    )
    async with billing.engine.worker():
        await billing.engine.wait(body["saga_id"], timeout=timedelta(seconds=30))
    got = (await client.get(f"/payments/{payment['id']}", headers=alice)).json()
    assert (got["status"], got["refunded_amount"], got["refundable_amount"]) == (
        "REFUNDED",
        5000,
        0,
    )
    refund = (await client.get(f"/refunds/{body['refund']['id']}", headers=alice)).json()
    assert refund["status"] == "SUCCEEDED"
    order = (await client.get(f"/orders/{payment['order_id']}", headers=alice)).json()
    assert order["status"] == "REFUNDED"
    listed = (await client.get(url, headers=alice)).json()
    assert [r["id"] for r in listed] == [body["refund"]["id"]]
    saga = await client.get(f"/sagas/{body['saga_id']}", headers=alice)
    assert saga.json()["status"] == "COMPLETED"


BAD = [
    pytest.param({"amount": 0}, 422, "invalid_amount", id="zero"),
    pytest.param({"amount": -100}, 422, "invalid_amount", id="negative"),
    pytest.param({"amount": 12.5}, 422, "invalid_request", id="fraction"),
    pytest.param({"amount": "100"}, 422, "invalid_request", id="string"),
    pytest.param({}, 422, "invalid_request", id="missing"),
    pytest.param({"amount": 5001}, 422, "amount_exceeds_refundable", id="over-balance"),
    pytest.param({"amount": 10, "currency": "USD"}, 422, "currency_mismatch", id="currency"),
    pytest.param({"amount": 10, "currency": "ABC"}, 422, "invalid_currency", id="not-iso"),
    pytest.param({"amount": 10, "extra": 1}, 422, "invalid_request", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
async def test_bad_refund_requests_are_4xx_and_write_nothing(
    billing: Billing,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Each bad body gets its status and error code with a message; no refund, no saga."""
    payment = await paid(client, alice)
    response = await client.post(f"/payments/{payment['id']}/refunds", json=body, headers=alice)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await billing.counts(payment["id"]) == {"refunds": 0, "sagas": 0}


async def test_other_users_payment_unknown_payment_and_no_token(
    billing: Billing, client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Bob cannot see or refund Alice's payment (404, like a missing one); no token is 401."""
    payment = await paid(client, alice)
    url = f"/payments/{payment['id']}/refunds"
    for path, who in ((url, bob), ("/payments/nope/refunds", alice)):
        response = await client.post(path, json={"amount": 10}, headers=who)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "payment_not_found"
    assert (await client.get(f"/payments/{payment['id']}", headers=bob)).status_code == 404
    assert (await client.get(f"/orders/{payment['order_id']}", headers=bob)).status_code == 404
    assert (await client.post(url, json={"amount": 10})).status_code == 401
    assert await billing.counts(payment["id"]) == {"refunds": 0, "sagas": 0}


async def test_second_refund_in_flight_is_409_and_reconcile_is_admin_only(
    client: httpx.AsyncClient, alice: dict[str, str], unique: str
) -> None:
    """A refund while another is in flight → 409 refund_in_progress; users cannot reconcile."""
    payment = await paid(client, alice)
    url = f"/payments/{payment['id']}/refunds"
    first = await client.post(url, json={"amount": 100}, headers=alice)
    assert first.status_code == 202
    second = await client.post(url, json={"amount": 100}, headers=alice)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "refund_in_progress"
    refund_id = first.json()["refund"]["id"]
    assert (await client.post(f"/refunds/{refund_id}/reconcile", headers=alice)).status_code == 403
    admin = headers(f"root-{unique}", Role.ADMIN)
    conflict = await client.post(f"/refunds/{refund_id}/reconcile", headers=admin)
    assert conflict.status_code == 409  # its saga has not failed


async def test_bad_orders_and_payments(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    """Bad orders are 422; a declined card gives a FAILED payment; paying twice is 409."""
    bad = await client.post(
        "/orders", json={"amount": 10, "currency": "XXX", "description": "x"}, headers=alice
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_currency"
    payment = await paid(client, alice, 700)
    twice = await client.post(f"/orders/{payment['order_id']}/pay", headers=alice)
    assert twice.status_code == 409
    order = await client.post(
        "/orders", json={"amount": 10, "currency": "EUR", "description": "x"}, headers=alice
    )
    declined = await client.post(
        f"/orders/{order.json()['id']}/pay",
        json={"payment_method": "pm_card_chargeCustomerFail"},
        headers=alice,
    )
    assert declined.status_code == 201
    assert declined.json()["status"] == "FAILED"
    unknown = await client.post(
        f"/orders/{order.json()['id']}/pay", json={"provider": "paypal"}, headers=alice
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_provider"
