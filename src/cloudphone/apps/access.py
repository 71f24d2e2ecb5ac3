"""Who may read, list and delete which applications: the owner model of the apps service.

An upload is private to its uploader (and admins) until an admin publishes it to the
*catalog*, which every user may read. A caller sees their own uploads (users: not DELETED
ones) and the catalog; admins see every record. A stranger is never told that a private
upload exists: reading it is "not found", exactly as for an id that was never used.

Listings take a :class:`AppScope`; "latest" is always the highest AVAILABLE version of a
package *among the records in that scope*, so a private upload never hides, or reveals
itself through, the catalog's latest version.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import ColumnElement, FromClause, Select, and_, or_, select, true

from cloudphone.apps.models import Application, AppStatus, applications
from cloudphone.domain import ConflictError, ForbiddenError, NotFoundError, Principal


class AppScope(StrEnum):
    """Which applications a listing covers; without one, everything the caller may see."""

    MINE = "mine"
    """The caller's own uploads, published or not (users: not DELETED ones)."""
    CATALOG = "catalog"
    """Published AVAILABLE applications: the same for every caller."""
    ALL = "all"
    """Every record in every state (admins only)."""


def scope_condition(
    table: FromClause, principal: Principal, scope: AppScope | None
) -> ColumnElement[bool]:
    """The rows of ``table`` in ``scope`` that ``principal`` may see.

    Raises:
        ForbiddenError: A user asked for ``AppScope.ALL``.
    """
    mine = table.c.uploaded_by == principal.user_id
    if not principal.is_admin:
        mine = and_(mine, table.c.status != AppStatus.DELETED.value)
    if scope == AppScope.MINE:
        return mine
    catalog = in_catalog(table)
    if scope == AppScope.CATALOG:
        return catalog
    if principal.is_admin:
        return true()
    if scope == AppScope.ALL:
        raise ForbiddenError("scope=all (every user's uploads) needs the admin role")
    return or_(mine, catalog)


def in_catalog(table: FromClause) -> ColumnElement[bool]:
    """Published and AVAILABLE (the SQL of :attr:`Application.in_catalog`)."""
    return and_(table.c.status == AppStatus.AVAILABLE.value, table.c.published_at.is_not(None))


def list_query(
    principal: Principal,
    *,
    scope: AppScope | None,
    package_name: str | None,
    latest_only: bool,
    statuses: Sequence[AppStatus] | None,
    limit: int,
    offset: int,
) -> Select[tuple[object, ...]]:
    """Records of ``scope`` that ``principal`` may see, by package then newest version first.

    Raises:
        ForbiddenError: A user asked for ``AppScope.ALL``.
    """
    query = select(applications).where(scope_condition(applications, principal, scope))
    if package_name is not None:
        query = query.where(applications.c.package_name == package_name)
    if latest_only:
        query = query.where(_latest_in(principal, scope))
    if statuses:
        query = query.where(applications.c.status.in_([s.value for s in statuses]))
    return (
        query.order_by(
            applications.c.package_name,
            applications.c.version_code.desc(),
            applications.c.created_at.desc(),
        )
        .limit(limit)
        .offset(offset)
    )


def _latest_in(principal: Principal, scope: AppScope | None) -> ColumnElement[bool]:
    """The highest AVAILABLE version of its package among the scope's records."""
    if scope == AppScope.CATALOG:
        return applications.c.is_latest == true()  # kept by every change of the catalog
    newer = applications.alias("newer")
    higher = select(newer.c.id).where(
        newer.c.package_name == applications.c.package_name,
        newer.c.status == AppStatus.AVAILABLE.value,
        newer.c.version_code > applications.c.version_code,
        scope_condition(newer, principal, scope),
    )
    return and_(applications.c.status == AppStatus.AVAILABLE.value, ~higher.exists())


def can_see(principal: Principal, app: Application) -> bool:
    """Whether ``principal`` may know that ``app`` exists (read it, download it)."""
    if principal.is_admin or app.in_catalog:
        return True
    return app.uploaded_by == principal.user_id and app.status is not AppStatus.DELETED


def deletable(principal: Principal, app: Application | None, app_id: str) -> Application:
    """``app`` (the record ``app_id``, if any) when ``principal`` may delete it.

    Admins may delete any application; an uploader their own, unless it is in the catalog.

    Raises:
        NotFoundError: No such record, already DELETED, or one the caller may not see.
        ForbiddenError: Someone else's catalog application.
        ConflictError: The uploader's own application is in the catalog (``published``).
    """
    if app is None or app.status is AppStatus.DELETED or not can_see(principal, app):
        raise NotFoundError(f"no application {app_id!r}")
    if principal.is_admin:
        return app
    if app.uploaded_by != principal.user_id:
        raise ForbiddenError(
            f"application {app.id} is not yours: only its uploader or an admin may delete it"
        )
    if app.in_catalog:
        raise ConflictError(
            f"application {app.id} is published in the catalog: an admin must unpublish it "
            "before you can delete it",
            code="published",
        )
    return app
