"""One saga run: state, step plan, timeline, data after each step, links, operator actions.

``GET /sagas/{id}`` is the page; ``GET /sagas/{id}/live`` its live part (htmx polls it);
``POST /sagas/{id}/{action}`` runs an operator action (admins, CSRF-checked) and answers the
live part with the result in place: 200 when done, 409 with the engine's reason when refused.
A fork's result links to the new run; the page shows a run's version, the run it was forked
from and its forks, and whether a live worker has its version.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse

from cloudphone.console.actions import ACTIONS, ActionInput, applicable
from cloudphone.console.links import resource_links
from cloudphone.console.plan import data_after_steps, redact, step_plan
from cloudphone.console.rendering import render
from cloudphone.console.security import AdminDep, SessionDep, console_of
from cloudphone.console.session import Session
from cloudphone.console.timeline import timeline
from cloudphone.domain import NotFoundError
from cloudphone.platform import Platform
from cloudphone.saga import OperatorActionError, SagaNotFoundError, SagaRun

router = APIRouter()

SagaId = Annotated[str, Path(min_length=1, max_length=64)]
MAX_NOTE = 2000
MAX_FORKS = 20
"""Forks listed on a run's page (the newest)."""


@router.get("/sagas/{saga_id}", response_class=HTMLResponse)
async def saga_page(request: Request, saga_id: SagaId, session: SessionDep) -> Any:
    """The saga's page."""
    context = await _detail(console_of(request).platform, session, saga_id)
    return render(request, "saga.html", nav="sagas", actions=ACTIONS, **context)


@router.get("/sagas/{saga_id}/live", response_class=HTMLResponse)
async def saga_live(request: Request, saga_id: SagaId, session: SessionDep) -> Any:
    """The part of the page that changes while the run moves."""
    context = await _detail(console_of(request).platform, session, saga_id)
    return render(request, "_saga_live.html", **context)


@router.post("/sagas/{saga_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    saga_id: SagaId,
    action: str,
    session: AdminDep,
    note: Annotated[str, Form(max_length=MAX_NOTE)] = "",
    from_step: Annotated[str, Form(max_length=100)] = "",
    force: Annotated[bool, Form()] = False,
) -> Any:
    """Run an operator action; the result (or the refusal's reason) shows in place."""
    platform = console_of(request).platform
    chosen = ACTIONS.get(action)
    if chosen is None:
        raise NotFoundError(f"no action {action!r}")
    await _visible(platform, session, saga_id)
    given = ActionInput(session.user_id, note.strip() or None, from_step.strip() or None, force)
    status, result, created = 200, ("ok", chosen.done), None
    if chosen.note == "required" and given.note is None:
        status, result = 422, ("error", f"{chosen.label} needs a note saying what was done.")
    elif chosen.step and given.from_step is None:
        status, result = 422, ("error", f"{chosen.label} needs the step to start from.")
    else:
        try:
            after = await chosen.perform(platform.engine, saga_id, given)
            created = after.id if after.id != saga_id else None
        except OperatorActionError as error:
            status, result = 409, ("error", f"{chosen.label} refused: {error}")
    context = {**await _detail(platform, session, saga_id), "result": result, "created": created}
    return render(request, "_saga_live.html", status_code=status, **context)


async def visible_run(platform: Platform, session: Session, saga_id: str) -> SagaRun | None:
    """The run, if it exists and the signed-in user may see it (a business page's saga)."""
    try:
        run = await platform.engine.get(saga_id)
    except SagaNotFoundError:
        return None
    return run if session.principal.can_see(run.started_by or "") else None


async def _visible(platform: Platform, session: Session, saga_id: str) -> SagaRun:
    run = await visible_run(platform, session, saga_id)
    if run is None:
        raise NotFoundError(f"no saga run {saga_id!r}")
    return run


async def _detail(platform: Platform, session: Session, saga_id: str) -> dict[str, Any]:
    engine = platform.engine
    run = await _visible(platform, session, saga_id)
    events = await engine.history(saga_id)
    # The definition of the version the run is pinned to (its steps, its pivot).
    saga = engine.registry.get((run.saga_type, run.saga_version))
    return {
        "run": run,
        "known_definition": saga is not None,
        "orphaned": run.status.is_active
        and bool(await engine.list(ids=[run.id], orphaned=True, limit=1)),
        "forks": await _forks(platform, session, run),
        "plan": step_plan(saga, run, events),
        "entries": timeline(events),
        "snapshots": data_after_steps(run, events),
        "data": redact(run.data),
        "links": resource_links(run.data),
        "offered": applicable(run, saga) if session.is_admin else [],
        "result": None,
        "created": None,
    }


async def _forks(platform: Platform, session: Session, run: SagaRun) -> list[SagaRun]:
    """The forks of ``run`` the signed-in user may see, newest first."""
    owner = None if session.is_admin else session.user_id
    return await platform.engine.list(forked_from=run.id, started_by=owner, limit=MAX_FORKS)
