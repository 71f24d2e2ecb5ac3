"""HTTP helpers for end-to-end tests: start a demo saga, wait for a status over the API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import eventually

TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}


async def start_demo(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    """POST /demo and return the new saga id (asserts 202)."""
    response = await client.post("/demo", json=body, headers=headers)
    assert response.status_code == 202, response.text
    saga_id: str = response.json()["id"]
    assert response.headers["location"] == f"/sagas/{saga_id}"
    return saga_id


async def saga_until(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    saga_id: str,
    statuses: set[str] = TERMINAL,
    *,
    within: float = 20.0,
) -> dict[str, Any]:
    """GET /sagas/{id} until its status is one of ``statuses``; returns the body."""

    async def probe() -> dict[str, Any]:
        response = await client.get(f"/sagas/{saga_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return await eventually(
        probe,
        lambda body: body["status"] in statuses,
        timeout=within,
        interval=0.05,
        what=f"saga {saga_id} in {sorted(statuses)}",
    )


def kinds(detail: dict[str, Any]) -> list[str]:
    """The event kinds of a saga detail's history, in order."""
    return [event["kind"] for event in detail["history"]]
