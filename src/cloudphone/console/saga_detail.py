"""One saga run: state, step plan, timeline, data after each step, links, operator actions.

``GET /sagas/{id}`` is the page; ``GET /sagas/{id}/live`` its live part (htmx polls it);
``POST /sagas/{id}/{action}`` runs an operator action (admins, CSRF-checked) and answers the
live part with the result in place: 200 when done, 409 with the engine's reason when refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse

from cloudphone.console.actions import ACTIONS, applicable
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
) -> Any:
    """Run an operator action; the result (or the refusal's reason) shows in place."""
    platform = console_of(request).platform
    chosen = ACTIONS.get(action)
    if chosen is None:
        raise NotFoundError(f"no action {action!r}")
    await _visible(platform, session, saga_id)
    text = note.strip() or None
    status, result = 200, ("ok", chosen.done)
    if chosen.note == "required" and text is None:
        status, result = 422, ("error", f"{chosen.label} needs a note saying what was done.")
    else:
        try:
            await chosen.perform(platform.engine, saga_id, session.user_id, text)
        except OperatorActionError as error:
            status, result = 409, ("error", f"{chosen.label} refused: {error}")
    context = {**await _detail(platform, session, saga_id), "result": result}
    return render(request, "_saga_live.html", status_code=status, **context)


async def _visible(platform: Platform, session: Session, saga_id: str) -> SagaRun:
    try:
        run = await platform.engine.get(saga_id)
    except SagaNotFoundError:
        run = None
    if run is None or not session.principal.can_see(run.started_by or ""):
        raise NotFoundError(f"no saga run {saga_id!r}")
    return run


async def _detail(platform: Platform, session: Session, saga_id: str) -> dict[str, Any]:
    run = await _visible(platform, session, saga_id)
    events = await platform.engine.history(saga_id)
    saga = platform.engine.sagas.get(run.saga_type)
    return {
        "run": run,
        "known_definition": saga is not None,
        "plan": step_plan(saga, run, events),
        "entries": timeline(events),
        "snapshots": data_after_steps(run, events),
        "data": redact(run.data),
        "links": resource_links(run.data),
        "offered": applicable(run, saga) if session.is_admin else [],
        "result": None,
    }
