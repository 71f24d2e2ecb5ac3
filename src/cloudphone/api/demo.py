"""``POST /demo``: start the demo saga (a saga with fault knobs, see :mod:`cloudphone.demo`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudphone.api.deps import IdempotencyKeyDep, PlatformDep, PrincipalDep
from cloudphone.api.errors import error_responses
from cloudphone.api.idempotency import start_saga, started_responses
from cloudphone.api.schemas import UtcDatetime
from cloudphone.demo import DEMO_SAGA

router = APIRouter(prefix="/demo", tags=["demo"])


class DemoRequest(BaseModel):
    """Input of a demo saga run."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(default="hello", max_length=200, description="Carried in the data.")
    work_ms: int = Field(default=0, ge=0, le=30_000, description="Time each step takes.")
    fail_step: Literal["PREPARE", "COMMIT", "NOTIFY"] | None = Field(
        default=None,
        description=(
            "Make this step fail non-retryably: before the pivot (PREPARE, COMMIT) the saga "
            "compensates; after it (NOTIFY) it goes FAILED for an operator."
        ),
    )
    fail_until: UtcDatetime | None = Field(
        default=None, description="The step fails only until then (so a later retry succeeds)."
    )


@router.post(
    "",
    summary="Start a demo saga",
    status_code=202,
    response_model=None,
    responses={
        **started_responses("The demo saga was started."),
        **error_responses(401, 409, 422),
    },
)
async def start_demo(
    body: DemoRequest,
    platform: PlatformDep,
    principal: PrincipalDep,
    idempotency: IdempotencyKeyDep,
) -> Response:
    """Start a demo saga run for the caller; follow it at ``GET /sagas/{id}``."""
    data = body.model_dump(mode="json", exclude_none=True)
    started = await start_saga(
        platform.engine, DEMO_SAGA, data, principal=principal, idempotency=idempotency
    )
    return started.response()
