"""Tracing across processes: a run started over HTTP and driven elsewhere is one trace.

A traced request to ``serve --no-worker`` starts it, a separate ``cloudphone worker`` drives
it; every span joins the caller's trace.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import fresh_database
from tests.support.http import saga_until, start_demo
from tests.support.server import CloudphoneProcess, auth, child_env, start_serve, start_worker
from tests.support.waiting import wait_sync


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for the two processes: a SQLite file both open, or PostgreSQL."""
    with fresh_database(request.param, tmp_path, "cloudphone_e2e_otel") as url:
        yield url


def traced_env(tmp_path: Path, database_url: str, name: str) -> dict[str, str]:
    """A child's environment with tracing on, exporting its spans to ``<name>-spans.jsonl``."""
    return child_env(
        tmp_path / "var",
        database_url,
        CLOUDPHONE_OTEL__ENABLED="true",
        CLOUDPHONE_OTEL__EXPORTER="console",
        CLOUDPHONE_OTEL__CONSOLE_FILE=str(tmp_path / f"{name}-spans.jsonl"),
        CLOUDPHONE_OTEL__EXPORT_DELAY="100ms",
        CLOUDPHONE_OTEL__SERVICE_NAME=f"cloudphone-{name}",
    )


def exported(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The spans a child has exported so far (one JSON object per line)."""
    path = tmp_path / f"{name}-spans.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may still be being written.
    return [json.loads(line) for line in lines if line.endswith("}")]


def of_run(spans: list[dict[str, Any]], saga_id: str) -> list[dict[str, Any]]:
    """The engine's spans of one run."""
    return [s for s in spans if s["attributes"].get("saga.id") == saga_id]


@pytest.fixture
def processes(tmp_path: Path, database_url: str) -> Iterator[dict[str, CloudphoneProcess]]:
    """``serve --no-worker`` (migrates first) and one ``cloudphone worker``, both traced."""
    started: dict[str, CloudphoneProcess] = {}
    try:
        api_env = traced_env(tmp_path, database_url, "api")
        started["api"] = start_serve(tmp_path, api_env, "--no-worker", name="api")
        started["worker"] = start_worker(
            tmp_path, traced_env(tmp_path, database_url, "worker"), "worker"
        )
        yield started
    finally:
        for process in started.values():
            process.stop()


async def test_the_workers_spans_join_the_trace_of_the_request_that_started_the_run(
    processes: dict[str, CloudphoneProcess], tmp_path: Path
) -> None:
    """Same trace id from the caller's traceparent to the worker's run and step spans."""
    trace = secrets.token_hex(16)
    headers = {**auth("traced"), "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"}
    async with httpx.AsyncClient(base_url=str(processes["api"].base_url), timeout=10) as http:
        saga_id = await start_demo(http, headers)
        detail = await saga_until(http, headers, saga_id, within=30)
    assert detail["status"] == "COMPLETED"

    def worker_exported_the_run() -> bool:
        names = {s["name"] for s in of_run(exported(tmp_path, "worker"), saga_id)}
        return "saga.run demo" in names

    wait_sync(worker_exported_the_run, timeout=20, what="the worker's spans of the run")
    wait_sync(lambda: bool(of_run(exported(tmp_path, "api"), saga_id)), timeout=20)

    worker_spans = of_run(exported(tmp_path, "worker"), saga_id)
    assert sorted(s["name"] for s in worker_spans) == [
        "saga.run demo",
        "saga.step COMMIT",
        "saga.step NOTIFY",
        "saga.step PREPARE",
    ]
    assert {s["context"]["trace_id"] for s in worker_spans} == {f"0x{trace}"}
    assert {s["resource"]["attributes"]["service.name"] for s in worker_spans} == {
        "cloudphone-worker"
    }
    (drive,) = [s for s in worker_spans if s["name"] == "saga.run demo"]
    assert drive["attributes"]["saga.worker"] == "worker"

    api_spans = exported(tmp_path, "api")
    (start,) = of_run(api_spans, saga_id)  # the API starts the run and drives none of it
    assert start["name"] == "saga.start demo"
    assert drive["parent_id"] == start["context"]["span_id"]
    (request,) = [s for s in api_spans if s["name"] == "POST /demo"]
    assert request["context"]["trace_id"] == f"0x{trace}"
    assert start["parent_id"] == request["context"]["span_id"]
