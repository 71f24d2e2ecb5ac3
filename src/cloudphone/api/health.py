"""Liveness (``/healthz``) and readiness (``/readyz``), both without a token; ``/metrics``.

A load balancer or orchestrator calls the probes without credentials, so they reveal nothing
but whether this process can serve: no versions, hosts, URLs or error messages (the reason a
check failed goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from cloudphone.api.deps import AdminDep, PlatformDep
from cloudphone.api.errors import error_responses
from cloudphone.platform import Platform

log = logging.getLogger("cloudphone.api")

router = APIRouter(tags=["health"])

DB_CHECK_TIMEOUT = 2.0
"""Seconds the readiness probe waits for ``SELECT 1``."""

Check = Literal["ok", "failing", "absent"]


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether this process can serve: its database answers and its worker (if any) is alive."""

    status: Literal["ready", "unavailable"]
    database: Check
    worker: Check = Field(description="`absent` when this process runs no worker.")


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> Health:
    """Always 200 while the process serves HTTP (no token needed)."""
    return Health()


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
)
async def readyz(platform: PlatformDep) -> Response:
    """200 when the database answers and the worker (if this process has one) is alive.

    No token needed (for load balancers); the body says only which check failed.
    """
    database: Check = "ok" if await database_answers(platform) else "failing"
    alive = platform.worker_alive()
    worker: Check = "absent" if alive is None else ("ok" if alive else "failing")
    ready = database == "ok" and worker != "failing"
    body = Readiness(status="ready" if ready else "unavailable", database=database, worker=worker)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **error_responses(401, 403),
    },
)
async def metrics(platform: PlatformDep, _admin: AdminDep) -> Response:
    """Engine, HTTP and process metrics in the Prometheus text format."""
    return Response(generate_latest(platform.registry), media_type=CONTENT_TYPE_LATEST)


async def database_answers(platform: Platform) -> bool:
    """Whether ``SELECT 1`` succeeds within :data:`DB_CHECK_TIMEOUT`."""
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT), platform.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:  # any failure means "not ready"; the log says which
        log.warning("readiness: database check failed: %s", error)
        return False
    return True
