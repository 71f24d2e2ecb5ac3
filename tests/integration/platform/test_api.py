"""The API in process, on SQLite and PostgreSQL: idempotent starts, OpenAPI, readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from cloudphone.api.app import create_app
from cloudphone.api.deps import MAX_ENGINE_KEY, IdempotencyKey
from cloudphone.platform import Platform, build_platform
from tests.support.http import saga_until
from tests.support.server import auth


async def test_concurrent_requests_with_one_key_start_one_saga(
    api: httpx.AsyncClient, platform: Platform, unique: str
) -> None:
    """Ten requests racing with one Idempotency-Key: one run, one 202, nine 200 naming it."""
    headers = {**auth(f"racer-{unique}"), "Idempotency-Key": "same"}
    responses = await asyncio.gather(
        *(api.post("/demo", json={"message": "race"}, headers=headers) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert platform.registry.get_sample_value("saga_started_total", {"saga_type": "demo"}) == 1
    runs = await platform.engine.list(started_by=f"racer-{unique}")
    assert len(runs) == 1


async def test_a_replayed_key_returns_the_finished_result(
    api: httpx.AsyncClient, unique: str
) -> None:
    """After the run finished, the same key answers 200 with its final state."""
    user = auth(f"replay-{unique}")
    headers = {**user, "Idempotency-Key": f"k-{unique}"}
    first = await api.post("/demo", json={}, headers=headers)
    await saga_until(api, user, first.json()["id"])
    replay = await api.post("/demo", json={}, headers=headers)
    assert replay.status_code == 200
    assert replay.json()["status"] == "COMPLETED"
    assert "location" not in replay.headers


async def test_a_user_listing_someone_elses_sagas_gets_403(
    api: httpx.AsyncClient, unique: str
) -> None:
    """Like /devices?owner_id=other: refused, never silently the caller's own runs."""
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    assert (await api.post("/demo", json={}, headers=auth(alice))).status_code == 202
    refused = await api.get("/sagas", params={"started_by": bob}, headers=auth(alice))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    mine = await api.get("/sagas", params={"started_by": alice}, headers=auth(alice))
    assert [run["started_by"] for run in mine.json()["items"]] == [alice]


def test_long_idempotency_keys_are_hashed_to_fit_the_engine() -> None:
    """User id + key never exceed the engine's column; distinct inputs stay distinct."""
    short = IdempotencyKey("k", "alice")
    assert short.engine_key == "alice:k"
    long_a = IdempotencyKey("k" * 200, "u" * 200)
    long_b = IdempotencyKey("k" * 199 + "j", "u" * 200)
    assert len(long_a.engine_key) <= MAX_ENGINE_KEY
    assert long_a.engine_key != long_b.engine_key


async def test_openapi_documents_auth_models_and_error_shapes(api: httpx.AsyncClient) -> None:
    """Every operation but the probes needs a bearer token and documents its error bodies.

    401 and 422 use the error body; saga starters document 202 and 200.
    """
    spec: dict[str, Any] = (await api.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    error_ref = "#/components/schemas/ErrorBody"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation, where
                continue
            assert operation["security"] == [{"bearer": []}], where
            for status in ("401",):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema["$ref"] == error_ref, where
            if operation.get("parameters") or operation.get("requestBody"):
                schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
                assert schema["$ref"] == error_ref, where
    demo = spec["paths"]["/demo"]["post"]["responses"]
    assert demo["202"]["content"]["application/json"]["schema"]["$ref"].endswith("SagaAccepted")
    assert demo["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SagaSummary")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_readiness_needs_no_token_and_reveals_nothing_else(
    api: httpx.AsyncClient,
) -> None:
    """A load balancer calls /readyz without credentials; the body is only the checks."""
    ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "database": "ok", "worker": "ok"}


async def test_readiness_fails_when_the_database_does_not_answer(make_settings: Any) -> None:
    """/readyz answers 503 naming the database (no token needed); /healthz still answers."""
    settings = make_settings(
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none", auto_migrate=False
    )
    platform = build_platform(settings, with_worker=False)
    transport = httpx.ASGITransport(app=create_app(platform))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "status": "unavailable",
                "database": "failing",
                "worker": "absent",
            }
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await platform.close()


async def test_the_worker_counts_as_alive_while_it_claims(platform: Platform) -> None:
    """worker_alive follows the worker's last claim round or heartbeat."""
    assert platform.worker is not None
    assert platform.worker_alive() is True
    alive_at = platform.worker.alive_at
    assert alive_at is not None
    assert platform.worker_alive(alive_at + platform.settings.worker_lease * 2) is False
