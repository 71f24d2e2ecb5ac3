"""Starting a saga from a request, idempotently: 202 for a new run, 200 for a repeated key.

A route that starts a saga takes an :data:`~cloudphone.api.deps.IdempotencyKeyDep`. A route
over the engine directly (like ``POST /demo``) calls :func:`start_saga` and returns
``started.response()``; a service use case receives ``idempotency.engine_key`` and reports
whether it created something, and the route calls :func:`set_started_status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from cloudphone.api.deps import IdempotencyKey
from cloudphone.api.schemas import SagaAccepted, SagaSummary
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import SagaEngine, SagaRun


def started_responses(accepted_description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a saga-starting route: 202 new run, 200 repeated key."""
    return {
        202: {"model": SagaAccepted, "description": accepted_description},
        200: {
            "model": SagaSummary,
            "description": "The Idempotency-Key was used before: the run it started.",
        },
    }


def set_started_status(response: Response, *, created: bool) -> None:
    """202 Accepted for a new run, 200 OK when an Idempotency-Key found an earlier one."""
    response.status_code = 202 if created else 200


@dataclass(frozen=True)
class Started:
    """The outcome of :func:`start_saga`."""

    saga_id: str
    saga_type: str
    existing: SagaRun | None
    """The earlier run an Idempotency-Key found (None when this request created the run)."""

    @property
    def created(self) -> bool:
        """Whether this request inserted the run."""
        return self.existing is None

    def body(self) -> SagaAccepted | SagaSummary:
        """The response body: the accepted run, or the state of the earlier one."""
        if self.existing is not None:
            return SagaSummary.of(self.existing)
        return SagaAccepted.of(self.saga_id, self.saga_type)

    def response(self) -> JSONResponse:
        """202 with the accepted run and its Location, or 200 with the earlier run's state."""
        body = self.body()
        if isinstance(body, SagaSummary):
            return JSONResponse(body.model_dump(mode="json"), status_code=200)
        return JSONResponse(
            body.model_dump(mode="json"), status_code=202, headers={"Location": body.url}
        )


async def start_saga(
    engine: SagaEngine,
    saga_type: str,
    data: dict[str, Any],
    *,
    principal: Principal,
    idempotency: IdempotencyKey | None,
) -> Started:
    """Start ``saga_type`` for ``principal``, or find the run an earlier equal key started.

    Raises:
        ConflictError: The key was used before with a different input (``idempotency_key_reused``).
    """
    key = idempotency.engine_key if idempotency is not None else None
    if key is not None:
        existing = await engine.find(saga_type, key)
        if existing is not None:
            return _repeat(existing, data)
    started = await engine.start_run(
        saga_type, data, idempotency_key=key, started_by=principal.user_id
    )
    if not started.created:  # a concurrent request with this key inserted it first
        return _repeat(await engine.get(started.id), data)
    return Started(started.id, saga_type, None)


def _repeat(existing: SagaRun, data: dict[str, Any]) -> Started:
    if not existing.started_with(data):
        raise ConflictError(
            "this Idempotency-Key was used with a different request",
            code="idempotency_key_reused",
        )
    return Started(existing.id, existing.saga_type, existing)
