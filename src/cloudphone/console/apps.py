"""Apps: versions per package with their catalog state, an app's page, download, publish.

Through the apps service's use cases, which apply its owner model
(:mod:`cloudphone.apps.access`): an upload is private to its uploader (and admins) until an
admin publishes it to the catalog, which every user reads. The list's scope is that of
``GET /apps``: ``mine``, ``catalog`` or (admins) ``all``; without one, everything the caller
may see.

``GET /apps/{id}/download`` hands out the APK as the API's download does: the file streamed
(filesystem store) or a redirect to a presigned URL made now (S3). ``POST
/apps/{id}/publish|unpublish`` (admins, CSRF-checked) answer the page's live part with the
result in place: 200 when done, 409 with the reason when refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cloudphone.apps.access import AppScope
from cloudphone.apps.models import APK_MEDIA_TYPE, Application, AppStatus
from cloudphone.apps.service import AppsService
from cloudphone.apps.storage.base import LocalFile
from cloudphone.console.filters import PAGE_SIZE, encode_query, parse_offset
from cloudphone.console.rendering import render
from cloudphone.console.saga_detail import visible_run
from cloudphone.console.security import AdminDep, SessionDep, console_of
from cloudphone.console.session import Session
from cloudphone.domain import ConflictError, NotFoundError, Principal
from cloudphone.platform import Platform

router = APIRouter()

AppId = Annotated[str, Path(min_length=1, max_length=64)]
VERSIONS = 100
"""Most versions of a package an app's page lists."""

SCOPES = {
    "": "everything you can see",
    AppScope.MINE.value: "my uploads",
    AppScope.CATALOG.value: "the catalog",
    AppScope.ALL.value: "every user's uploads",
}
"""The scopes the list offers ("all" to admins only), with their labels."""


@dataclass(frozen=True)
class AppFilters:
    """What the operator asked the apps list for.

    Attributes:
        scope: ``mine``, ``catalog``, ``all`` (admins) or empty (everything visible).
        package: Only this package.
        status: Only records in this status.
        latest: Only each package's highest AVAILABLE version in the scope.
        offset: Rows to skip (pagination).
        problems: Values that could not be used, as messages.
    """

    scope: str = ""
    package: str = ""
    status: AppStatus | None = None
    latest: bool = False
    offset: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, query: Mapping[str, str], *, admin: bool) -> AppFilters:
        """The filters in ``query`` (a user asking for ``all`` gets a message instead)."""
        problems: list[str] = []
        scope = query.get("scope", "").strip().lower()
        if scope not in SCOPES:
            problems.append(f"unknown scope {scope!r}")
            scope = ""
        elif scope == AppScope.ALL and not admin:
            problems.append("the scope 'all' (every user's uploads) needs the admin role")
            scope = ""
        raw_status = query.get("status", "").strip().upper()
        if raw_status and raw_status not in AppStatus.__members__:
            problems.append(f"unknown status {query.get('status')!r}")
        return cls(
            scope=scope,
            package=query.get("package", "").strip()[:255],
            status=AppStatus(raw_status) if raw_status in AppStatus.__members__ else None,
            latest=query.get("latest", "") in ("1", "on", "true"),
            offset=parse_offset(query.get("offset", "0"), problems),
            problems=problems,
        )

    def query_string(self, **changes: object) -> str:
        """These filters as a query string, with ``changes`` applied (e.g. ``offset=50``)."""
        values: dict[str, object] = {
            "scope": self.scope,
            "package": self.package,
            "status": self.status.value if self.status else "",
            "latest": "1" if self.latest else "",
            "offset": self.offset or "",
        }
        return encode_query(values, changes)

    @property
    def active(self) -> bool:
        """Any filter is set (the empty state then says so)."""
        return bool(self.query_string(offset=""))


@dataclass(frozen=True)
class AppAction:
    """An admin action on an application (``data-action`` and the URL's last segment).

    Attributes:
        name: ``publish`` or ``unpublish``.
        label: The button's text.
        explain: What it does, shown in the confirmation.
        applies: Whether it makes sense for the application now.
        perform: Calls the apps service.
        done: What the result line says on success.
    """

    name: str
    label: str
    explain: str
    applies: Callable[[Application], bool]
    perform: Callable[[AppsService, Principal, str], Awaitable[Application]]
    done: str


ACTIONS: dict[str, AppAction] = {
    action.name: action
    for action in (
        AppAction(
            "publish",
            "Publish",
            "Put this version in the catalog: every user may then see and download it, and it "
            "becomes the package's latest if no published version is higher.",
            lambda app: app.status is AppStatus.AVAILABLE and app.published_at is None,
            lambda service, who, app_id: service.publish_app(who, app_id),
            "Published: every user sees this version in the catalog.",
        ),
        AppAction(
            "unpublish",
            "Unpublish",
            "Take this version out of the catalog: private to its uploader again (who may then "
            "delete it); the package's latest falls back to the highest version still published.",
            lambda app: app.published_at is not None,
            lambda service, who, app_id: service.unpublish_app(who, app_id),
            "Unpublished: only its uploader and admins see it now.",
        ),
    )
}
"""The admin actions on an application, by name, in button order."""


@router.get("/apps", response_class=HTMLResponse)
async def apps_page(request: Request, session: SessionDep) -> Any:
    """Applications by package, newest version first (htmx: the rows alone)."""
    filters = AppFilters.parse(request.query_params, admin=session.is_admin)
    apps = await console_of(request).platform.apps.list_apps(
        session.principal,
        scope=AppScope(filters.scope) if filters.scope else None,
        package_name=filters.package or None,
        latest_only=filters.latest,
        statuses=[filters.status] if filters.status else None,
        limit=PAGE_SIZE + 1,
        offset=filters.offset,
    )
    htmx = request.headers.get("HX-Request") == "true"
    return render(
        request,
        "_app_rows.html" if htmx else "apps.html",
        filters=filters,
        apps=apps[:PAGE_SIZE],
        more=len(apps) > PAGE_SIZE,
        page_size=PAGE_SIZE,
        scopes={k: v for k, v in SCOPES.items() if session.is_admin or k != AppScope.ALL},
        app_statuses=[s.value for s in AppStatus],
        nav="apps",
    )


@router.get("/apps/{app_id}", response_class=HTMLResponse)
async def app_page(request: Request, session: SessionDep, app_id: AppId) -> Any:
    """One application with the versions of its package (htmx: its live part)."""
    context = await _app(console_of(request).platform, session, app_id)
    htmx = request.headers.get("HX-Request") == "true"
    return render(
        request, "_app_live.html" if htmx else "app.html", actions=ACTIONS, nav="apps", **context
    )


@router.get("/apps/{app_id}/download")
async def download(request: Request, session: SessionDep, app_id: AppId) -> Response:
    """The APK: streamed from the filesystem store, or a redirect to a presigned URL."""
    app, target = await console_of(request).platform.apps.download(session.principal, app_id)
    if isinstance(target, LocalFile):
        return FileResponse(target.path, media_type=APK_MEDIA_TYPE, filename=app.download_name)
    return RedirectResponse(target.url, status_code=303)


@router.post("/apps/{app_id}/{action}", response_class=HTMLResponse)
async def act(request: Request, session: AdminDep, app_id: AppId, action: str) -> Any:
    """Publish or unpublish; the result (or the refusal's reason) shows in place."""
    chosen = ACTIONS.get(action)
    if chosen is None:
        raise NotFoundError(f"no action {action!r}")
    platform = console_of(request).platform
    status, result = 200, ("ok", chosen.done)
    try:
        await chosen.perform(platform.apps, session.principal, app_id)
    except ConflictError as error:
        status, result = 409, ("error", f"{chosen.label} refused: {error.message}")
    context = {**await _app(platform, session, app_id), "result": result}
    return render(request, "_app_live.html", status_code=status, **context)


async def _app(platform: Platform, session: Session, app_id: str) -> dict[str, Any]:
    app = await platform.apps.get_app(session.principal, app_id)
    versions = await platform.apps.list_apps(
        session.principal, package_name=app.package_name, limit=VERSIONS
    )
    return {
        "app": app,
        "versions": versions,
        "run": await visible_run(platform, session, app.saga_id),
        "offered": [a for a in ACTIONS.values() if a.applies(app)] if session.is_admin else [],
        "result": None,
    }
