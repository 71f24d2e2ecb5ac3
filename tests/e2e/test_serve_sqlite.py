"""``cloudphone serve`` on the embedded defaults, driven over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from cloudphone.domain import Role
from tests.support.http import kinds, saga_until, start_demo
from tests.support.server import auth, child_env, start_serve
from tests.support.waiting import eventually


async def test_a_demo_saga_runs_to_completion(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """POST /demo answers 202 at once; the embedded worker completes the run."""
    saga_id = await start_demo(client, alice, message="hi", work_ms=5)
    detail = await saga_until(client, alice, saga_id)
    assert detail["status"] == "COMPLETED"
    assert detail["started_by"] == "alice"
    assert detail["data"]["message"] == "hi"
    assert kinds(detail)[0] == "saga_started"
    assert kinds(detail)[-1] == "saga_completed"
    assert [e["step"] for e in detail["history"] if e["kind"] == "step_succeeded"] == [
        "PREPARE",
        "COMMIT",
        "NOTIFY",
    ]


async def test_repeating_an_idempotency_key_returns_the_same_saga(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Same key → same run with 200; another user's key is theirs; a changed body is a 409."""
    headers = {**alice, "Idempotency-Key": "order-42"}
    first = await client.post("/demo", json={"message": "once"}, headers=headers)
    again = await client.post("/demo", json={"message": "once"}, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] in {"PENDING", "RUNNING", "COMPLETED"}
    other = await client.post(
        "/demo", json={"message": "once"}, headers={**bob, "Idempotency-Key": "order-42"}
    )
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]
    changed = await client.post("/demo", json={"message": "twice"}, headers=headers)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"


async def test_a_failure_before_the_pivot_is_compensated(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """PREPARE fails for good: the saga undoes it and ends COMPENSATED."""
    saga_id = await start_demo(client, alice, fail_step="PREPARE")
    detail = await saga_until(client, alice, saga_id)
    assert detail["status"] == "COMPENSATED"
    assert detail["error"]["type"] == "DemoFault"
    assert "compensation_succeeded" in kinds(detail)


async def test_a_failure_after_the_pivot_waits_for_an_operator_retry(
    client: httpx.AsyncClient, alice: dict[str, str], admin: dict[str, str]
) -> None:
    """NOTIFY fails after the pivot → FAILED, needing attention; a retry later completes it.

    The admin retries once the fault has cleared.
    """
    # Wide enough that the run reaches NOTIFY inside it even on a loaded machine.
    until = datetime.now(UTC) + timedelta(seconds=3)
    saga_id = await start_demo(client, alice, fail_step="NOTIFY", fail_until=until.isoformat())
    failed = await saga_until(client, alice, saga_id)
    assert failed["status"] == "FAILED"
    assert failed["needs_attention"] is True
    listed = await client.get("/sagas", params={"needs_attention": "true"}, headers=admin)
    assert saga_id in [item["id"] for item in listed.json()["items"]]

    async def now() -> datetime:
        return datetime.now(UTC)

    await eventually(now, lambda t: t > until, timeout=10, what="the demo fault to clear")
    retried = await client.post(f"/sagas/{saga_id}/retry", json={"note": "fixed"}, headers=admin)
    assert retried.status_code == 200, retried.text
    done = await saga_until(client, alice, saga_id)
    assert done["status"] == "COMPLETED"
    retry_events = [e for e in done["history"] if e["kind"] == "operator_retry"]
    assert retry_events[0]["detail"]["actor"] == "root"


async def test_an_admin_resolves_a_failed_saga_with_a_note(
    client: httpx.AsyncClient, alice: dict[str, str], admin: dict[str, str]
) -> None:
    """Resolve keeps it FAILED, records the note, and it no longer needs attention."""
    saga_id = await start_demo(client, alice, fail_step="NOTIFY")
    await saga_until(client, alice, saga_id)
    blank = await client.post(f"/sagas/{saga_id}/resolve", json={"note": "  "}, headers=admin)
    assert blank.status_code == 422
    resolved = await client.post(
        f"/sagas/{saga_id}/resolve", json={"note": "refunded by hand"}, headers=admin
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolution"] == "refunded by hand"
    assert resolved.json()["needs_attention"] is False
    twice = await client.post(f"/sagas/{saga_id}/resolve", json={"note": "x"}, headers=admin)
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "operator_action_rejected"


async def test_an_admin_cancels_a_running_saga_before_its_pivot(
    client: httpx.AsyncClient, alice: dict[str, str], admin: dict[str, str]
) -> None:
    """Cancel during a slow PREPARE: the step is interrupted and compensated."""
    saga_id = await start_demo(client, alice, work_ms=20_000)
    await saga_until(client, alice, saga_id, {"RUNNING"})
    cancelled = await client.post(f"/sagas/{saga_id}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    detail = await saga_until(client, alice, saga_id, within=15)
    assert detail["status"] == "COMPENSATED"
    assert detail["compensation_cause"] == "cancelled"
    again = await client.post(f"/sagas/{saga_id}/cancel", headers=admin)
    assert again.status_code == 409


async def test_listing_filters_and_paginates(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Pages chain through next_offset without overlap; filters narrow the list."""
    user = auth("pager")
    ids = {await start_demo(client, user) for _ in range(5)}
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await client.get(
            "/sagas", params={"limit": 2, "offset": offset, "started_by": "pager"}, headers=admin
        )
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        offset = page.json()["next_offset"]
    assert sorted(seen) == sorted(ids)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = await client.get("/sagas", params={"created_after": future}, headers=admin)
    assert none.json()["items"] == []
    typed = await client.get("/sagas", params={"saga_type": "nope"}, headers=admin)
    assert typed.json()["items"] == []


async def test_metrics_show_engine_and_http_counters(
    client: httpx.AsyncClient, alice: dict[str, str], admin: dict[str, str]
) -> None:
    """/metrics (admin) serves Prometheus text with saga and HTTP metrics."""
    await saga_until(client, alice, await start_demo(client, alice))
    response = await client.get("/metrics", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'saga_started_total{saga_type="demo"}' in text
    assert 'saga_finished_total{saga_type="demo",status="COMPLETED"}' in text
    assert 'http_requests_total{method="POST",route="/demo",status="202"}' in text
    assert "process_resident_memory_bytes" in text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    """The probes need no token; /readyz reports the database and the embedded worker."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "worker": "ok"}


async def test_sigterm_lets_the_running_step_finish_and_hands_the_run_back(
    tmp_path: Path,
) -> None:
    """SIGTERM mid-step: the step finishes, the process exits 0, a restart completes the run.

    The running step gets the shutdown grace; the unfinished run is handed back, not lost.
    """
    env = child_env(tmp_path / "var")
    user = auth("alice", Role.USER)
    server = start_serve(tmp_path, env)
    try:
        async with httpx.AsyncClient(base_url=str(server.base_url)) as http:
            saga_id = await start_demo(http, user, work_ms=1500)
            await saga_until(http, user, saga_id, {"RUNNING"})
        code = await asyncio.to_thread(server.terminate, 20)
        assert code == 0, server.log()
    finally:
        server.stop()
    assert "handed 1 runs back at shutdown" in server.log(), server.log()
    again = start_serve(tmp_path, env, name="serve-again")
    try:
        async with httpx.AsyncClient(base_url=str(again.base_url)) as http:
            detail = await saga_until(http, user, saga_id)
    finally:
        again.stop()
    assert detail["status"] == "COMPLETED"
    prepared = [e for e in detail["history"] if e["kind"] == "step_succeeded"]
    assert prepared[0]["step"] == "PREPARE"
    assert "step_failed" not in kinds(detail), "the step was interrupted instead of finishing"
    assert detail["data"]["prepared_by"] != detail["data"]["notified_by"]
