"""The sagas list: filters, search by saga or business id, pagination, live refresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloudphone.console.filters import PAGE_SIZE, RANGES, SagaFilters
from cloudphone.console.rendering import render
from cloudphone.console.search import Match, resolve
from cloudphone.console.security import SessionDep, console_of
from cloudphone.console.session import Session
from cloudphone.platform import Platform
from cloudphone.saga import SagaRun

router = APIRouter()


@router.get("/sagas", response_class=HTMLResponse)
async def list_sagas(request: Request, session: SessionDep) -> Any:
    """The list page (its rows alone when htmx refreshes or filters)."""
    filters = SagaFilters.parse(request.query_params, admin=session.is_admin)
    platform = console_of(request).platform
    runs, matches = await _find(platform, session, filters)
    template = "_saga_rows.html" if request.headers.get("HX-Request") == "true" else "sagas.html"
    return render(
        request,
        template,
        filters=filters,
        runs=runs[:PAGE_SIZE],
        more=len(runs) > PAGE_SIZE,
        matches=matches,
        types=sorted(platform.engine.sagas),
        ranges=list(RANGES),
        page_size=PAGE_SIZE,
        nav="sagas",
    )


async def _find(
    platform: Platform, session: Session, filters: SagaFilters
) -> tuple[list[SagaRun], list[Match] | None]:
    """One page of runs (plus one, to know whether another page follows) and the matches."""
    matches = None
    ids: list[str] | None = None
    if filters.q:
        matches = await resolve(platform, session.principal, filters.q)
        ids = list(dict.fromkeys(i for m in matches for i in m.saga_ids))
        if not ids:
            return [], matches
    owner = filters.started_by or None if session.is_admin else session.user_id
    runs = await platform.engine.list(
        status=filters.status,
        saga_type=filters.saga_type or None,
        started_by=owner,
        created_after=filters.created_after(datetime.now(UTC)),
        created_before=filters.before,
        needs_attention=filters.needs_attention,
        orphaned=filters.orphaned,
        ids=ids,
        limit=PAGE_SIZE + 1,
        offset=filters.offset,
    )
    return runs, matches
