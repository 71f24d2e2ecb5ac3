"""Saga admin API: read runs (users: their own); retry, cancel, resolve, migrate, fork (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response

from cloudphone.api.deps import AdminDep, PlatformDep, PrincipalDep, single_valued_query
from cloudphone.api.errors import error_responses
from cloudphone.api.schemas import (
    CreatedAfter,
    CreatedBefore,
    ForkRequest,
    MigrateRequest,
    ResolveRequest,
    RetryRequest,
    SagaDetail,
    SagaPage,
    SagaSummary,
)
from cloudphone.domain import ForbiddenError, NotFoundError, Principal
from cloudphone.saga import SagaEngine, SagaNotFoundError, SagaRun, SagaStatus

router = APIRouter(prefix="/sagas", tags=["sagas"], responses=error_responses(401, 422))

SagaId = Annotated[str, Path(min_length=1, max_length=64, description="The saga run id.")]
MAX_PAGE = 200


@router.get(
    "",
    summary="List saga runs",
    response_model=SagaPage,
    responses=error_responses(403),
    dependencies=[Depends(single_valued_query)],
)
async def list_sagas(
    platform: PlatformDep,
    principal: PrincipalDep,
    status: Annotated[SagaStatus | None, Query(description="Only runs in this status.")] = None,
    saga_type: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Only this saga type.")
    ] = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    needs_attention: Annotated[
        bool, Query(description="Only FAILED runs no operator has resolved.")
    ] = False,
    orphaned: Annotated[
        bool,
        Query(
            description="Only active runs whose (type, version) no live worker drives: they "
            "wait until a worker with that version starts, or an operator migrates them."
        ),
    ] = False,
    forked_from: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="Only the forks of this run."),
    ] = None,
    started_by: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only runs this user started (users: only themselves, else 403).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SagaPage:
    """Runs matching every filter, newest first. Users see the runs they started; admins all."""
    if not principal.is_admin and started_by not in (None, principal.user_id):
        raise ForbiddenError("you can only list the saga runs you started")
    owner = started_by if principal.is_admin else principal.user_id
    runs = await platform.engine.list(
        status=status,
        saga_type=saga_type,
        started_by=owner,
        created_after=created_after,
        created_before=created_before,
        needs_attention=needs_attention,
        orphaned=orphaned,
        forked_from=forked_from,
        limit=limit + 1,
        offset=offset,
    )
    more = len(runs) > limit
    return SagaPage(
        items=[SagaSummary.of(run) for run in runs[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/{saga_id}",
    summary="Read a saga run and its history",
    response_model=SagaDetail,
    responses=error_responses(404),
)
async def get_saga(saga_id: SagaId, platform: PlatformDep, principal: PrincipalDep) -> SagaDetail:
    """The run's current state, data and full history (404 if it is not yours)."""
    run = await visible_run(platform.engine, saga_id, principal)
    events = await platform.engine.history(saga_id)
    return SagaDetail.with_history(run, events)


@router.post(
    "/{saga_id}/retry",
    summary="Retry a FAILED saga",
    response_model=SagaSummary,
    responses=error_responses(403, 404, 409),
)
async def retry_saga(
    saga_id: SagaId,
    platform: PlatformDep,
    admin: AdminDep,
    body: Annotated[RetryRequest | None, Body()] = None,
) -> SagaSummary:
    """Resume a FAILED run at the step that failed (409 in any other state)."""
    note = body.note if body is not None else None
    run = await platform.engine.retry(saga_id, note=note, actor=admin.user_id)
    return SagaSummary.of(run)


@router.post(
    "/{saga_id}/cancel",
    summary="Cancel a running saga",
    response_model=SagaSummary,
    responses=error_responses(403, 404, 409),
)
async def cancel_saga(saga_id: SagaId, platform: PlatformDep, admin: AdminDep) -> SagaSummary:
    """Cancel a run before its pivot: what started is compensated (409 after the pivot)."""
    run = await platform.engine.cancel(saga_id, actor=admin.user_id)
    return SagaSummary.of(run)


@router.post(
    "/{saga_id}/resolve",
    summary="Resolve a FAILED saga by hand",
    response_model=SagaSummary,
    responses=error_responses(403, 404, 409),
)
async def resolve_saga(
    saga_id: SagaId, body: ResolveRequest, platform: PlatformDep, admin: AdminDep
) -> SagaSummary:
    """Close a FAILED run with a note saying what was done by hand; it stays FAILED."""
    run = await platform.engine.resolve(saga_id, body.note, actor=admin.user_id)
    return SagaSummary.of(run)


@router.post(
    "/{saga_id}/migrate",
    summary="Move a saga run to another version",
    response_model=SagaSummary,
    responses=error_responses(403, 404, 409),
)
async def migrate_saga(
    saga_id: SagaId, body: MigrateRequest, platform: PlatformDep, admin: AdminDep
) -> SagaSummary:
    """Move an active or FAILED run to another registered version of its saga.

    Steps are matched by name; 409 when the target lacks the run's current step or a step it
    did, reorders those, or would move it across a pivot. An active run goes on under the
    target with any worker that has it; a FAILED one waits for a retry.
    """
    run = await platform.engine.migrate(
        saga_id, body.to_version, note=body.note, actor=admin.user_id
    )
    return SagaSummary.of(run)


@router.post(
    "/{saga_id}/fork",
    summary="Fork a finished saga run from a step",
    status_code=201,
    response_model=SagaSummary,
    responses=error_responses(403, 404, 409),
)
async def fork_saga(
    saga_id: SagaId,
    body: ForkRequest,
    response: Response,
    platform: PlatformDep,
    admin: AdminDep,
) -> SagaSummary:
    """Start a new run of the same version with the original's data before ``from_step``.

    The steps from there run again, with new idempotency keys; both histories link to each
    other. 409 when the original is not finished or the step unknown, and, unless ``force``,
    when ``from_step`` is not after a pivot the original completed or comes after a step it
    undid or never completed. The answer is the new run (``Location`` names it).
    """
    fork_id = await platform.engine.fork(
        saga_id, body.from_step, note=body.note, force=body.force, actor=admin.user_id
    )
    response.headers["Location"] = f"/sagas/{fork_id}"
    return SagaSummary.of(await platform.engine.get(fork_id))


async def visible_run(engine: SagaEngine, saga_id: str, principal: Principal) -> SagaRun:
    """The run, if ``principal`` may see it.

    Raises:
        NotFoundError: No such run, or not the caller's (never 403: a user must not learn
            that someone else's run exists).
    """
    try:
        run = await engine.get(saga_id)
    except SagaNotFoundError:
        run = None
    if run is None or not principal.can_see(run.started_by or ""):
        raise NotFoundError(f"no saga run {saga_id!r}")
    return run
