"""Apps API: upload APKs (streamed), list, read, download, publish and delete applications.

An upload is private to its uploader (and admins) until an admin publishes it to the catalog
(``POST /apps/{id}/publish``), which every user may read; ``GET /apps?scope=`` chooses
``mine``, ``catalog`` or (admins) ``all``. A stranger reading a private upload gets 404, as
for an id that does not exist.

``POST /apps`` reads the multipart body as it arrives (see :mod:`.apps_multipart`) and hands the
file's bytes to the use case, which spools, hashes, size-checks and parses them before the
``app_upload`` saga starts; it answers 202 with the saga id and the application it will create.
Downloads are presigned S3 URLs made on request (a 307 redirect, or JSON with
``redirect=false``) or, on the filesystem store, the file streamed by this server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from cloudphone.api.apps_multipart import MULTIPART_OVERHEAD, MultipartUpload
from cloudphone.api.deps import AdminDep, IdempotencyKeyDep, PlatformDep, PrincipalDep
from cloudphone.api.errors import error_responses
from cloudphone.api.idempotency import set_started_status
from cloudphone.apps.access import AppScope
from cloudphone.apps.models import APK_MEDIA_TYPE, Application, AppStatus
from cloudphone.apps.storage.base import LocalFile
from cloudphone.domain import PayloadTooLargeError

router = APIRouter(prefix="/apps", tags=["apps"], responses=error_responses(401, 422))

AppId = Annotated[str, Path(min_length=1, max_length=64, description="The application id.")]
MAX_PAGE = 200

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The APK."},
                        "description": {"type": "string", "maxLength": 1000},
                    },
                }
            }
        },
    }
}


class ApplicationOut(BaseModel):
    """An uploaded APK version."""

    id: str
    package_name: str
    version_code: int = Field(description="Android's 64-bit version code.")
    version_name: str | None
    label: str | None
    min_sdk: int | None
    target_sdk: int | None
    permissions: list[str]
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Hex SHA-256 of the APK.")
    status: AppStatus
    is_latest: bool = Field(
        description="The package's newest version in the catalog (highest published AVAILABLE "
        "version code). An unpublished upload is never the latest."
    )
    uploaded_by: str
    description: str | None
    saga_id: str = Field(description="The `app_upload` run that created it.")
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    in_catalog: bool = Field(description="Published and AVAILABLE: every user may read it.")
    published_at: datetime | None = Field(description="When an admin published it.")
    published_by: str | None = Field(description="The admin who published it.")
    download_url: str = Field(description="Where to download it once AVAILABLE.")

    @classmethod
    def of(cls, app: Application) -> ApplicationOut:
        """Render an application."""
        return cls(
            **{name: getattr(app, name) for name in cls.model_fields if hasattr(app, name)},
            download_url=f"/apps/{app.id}/download",
        )


class UploadAccepted(BaseModel):
    """The upload was accepted; its saga stores it."""

    saga_id: str
    saga_url: str = Field(description="Follow the upload at `GET /sagas/{id}`.")
    application: ApplicationOut


class ApplicationPage(BaseModel):
    """One page of applications: by package, newest version first."""

    items: list[ApplicationOut]
    limit: int
    offset: int


class DownloadLink(BaseModel):
    """A presigned URL for the APK, valid until ``expires_at``."""

    url: str
    expires_at: datetime


@router.post(
    "",
    status_code=202,
    summary="Upload an APK",
    openapi_extra=UPLOAD_BODY,
    responses={
        **error_responses(409, 413, 503),
        200: {"model": UploadAccepted, "description": "The Idempotency-Key was used before."},
    },
)
async def upload_app(
    request: Request,
    response: Response,
    platform: PlatformDep,
    principal: PrincipalDep,
    idempotency: IdempotencyKeyDep,
) -> UploadAccepted:
    """Stream an APK (multipart field ``file``, optional ``description``) and start its upload.

    The body is never held in memory. Refused with nothing stored: 413 over the size limit;
    422 for anything that is not a valid APK (``invalid_zip``, ``manifest_missing``,
    ``manifest_invalid``, …); 409 ``duplicate_version`` when the package already has this
    version code. The same ``Idempotency-Key`` answers 200 with the first upload.
    """
    limit = platform.settings.apps.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLargeError(f"the upload is larger than the limit of {limit} bytes")
    body = MultipartUpload(request)
    accepted = await platform.apps.upload_app(
        principal,
        body.file_chunks(),
        description=body.description,
        idempotency_key=idempotency.engine_key if idempotency is not None else None,
    )
    set_started_status(response, created=accepted.created)
    response.headers["Location"] = f"/apps/{accepted.application.id}"
    return UploadAccepted(
        saga_id=accepted.saga_id,
        saga_url=f"/sagas/{accepted.saga_id}",
        application=ApplicationOut.of(accepted.application),
    )


@router.get("", summary="List applications", responses=error_responses(403))
async def list_apps(
    platform: PlatformDep,
    principal: PrincipalDep,
    scope: Annotated[
        AppScope | None,
        Query(
            description="`mine`: your uploads, published or not; `catalog`: published "
            "applications, the same for everyone; `all`: every record (admins only, else 403). "
            "Omitted: everything you may see (users: `mine` plus `catalog`; admins: `all`)."
        ),
    ] = None,
    package: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Only this package.")
    ] = None,
    latest: Annotated[
        bool,
        Query(
            description="Only each package's highest AVAILABLE version among the listed "
            "records (with `scope=catalog`: the catalog's latest)."
        ),
    ] = False,
    status: Annotated[list[AppStatus] | None, Query(description="Only these statuses.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ApplicationPage:
    """Applications by package, newest version first, within ``scope``.

    An upload is private to its uploader (and admins) until an admin publishes it to the
    catalog. Users never see DELETED records.
    """
    apps = await platform.apps.list_apps(
        principal,
        scope=scope,
        package_name=package,
        latest_only=latest,
        statuses=status,
        limit=limit,
        offset=offset,
    )
    return ApplicationPage(items=[ApplicationOut.of(a) for a in apps], limit=limit, offset=offset)


@router.get("/{app_id}", summary="Read an application", responses=error_responses(404))
async def get_app(app_id: AppId, platform: PlatformDep, principal: PrincipalDep) -> ApplicationOut:
    """The application: yours, or in the catalog (404 otherwise, as for an unknown id)."""
    return ApplicationOut.of(await platform.apps.get_app(principal, app_id))


@router.get(
    "/{app_id}/download",
    summary="Download an APK",
    response_model=None,
    responses={
        **error_responses(404, 409, 503),
        200: {
            "description": "The APK (filesystem store), or a presigned URL (`redirect=false`).",
            "content": {
                APK_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": DownloadLink.model_json_schema()},
            },
        },
        307: {"description": "Redirect to a presigned URL of the object store."},
    },
)
async def download_app(
    app_id: AppId,
    platform: PlatformDep,
    principal: PrincipalDep,
    redirect: Annotated[
        bool, Query(description="Redirect to the presigned URL (else return it as JSON).")
    ] = True,
) -> Response:
    """The APK bytes, or a presigned URL made now (never stored); 409 unless AVAILABLE."""
    app, target = await platform.apps.download(principal, app_id)
    if isinstance(target, LocalFile):
        return FileResponse(target.path, media_type=APK_MEDIA_TYPE, filename=app.download_name)
    if redirect:
        return RedirectResponse(target.url, status_code=307)
    link = DownloadLink(url=target.url, expires_at=target.expires_at)
    return JSONResponse(link.model_dump(mode="json"))


@router.delete(
    "/{app_id}",
    summary="Delete an application",
    responses=error_responses(403, 404, 409, 503),
)
async def delete_app(
    app_id: AppId, platform: PlatformDep, principal: PrincipalDep
) -> ApplicationOut:
    """Remove the object, then mark the record DELETED; repeat it if it answered 503.

    Uploaders may delete their own applications unless they are in the catalog (409
    ``published``: an admin must unpublish it first); admins may delete any. 403 for someone
    else's catalog application, 404 for one you may not see; 409 ``upload_in_progress``
    while its upload saga runs.
    """
    return ApplicationOut.of(await platform.apps.delete_app(principal, app_id))


@router.post(
    "/{app_id}/publish",
    summary="Publish an application to the catalog (admin)",
    responses=error_responses(403, 404, 409),
)
async def publish_app(app_id: AppId, platform: PlatformDep, admin: AdminDep) -> ApplicationOut:
    """Every user may read and download it from now on; 409 ``not_available`` unless AVAILABLE.

    Publishing a published application answers 200 and changes nothing.
    """
    return ApplicationOut.of(await platform.apps.publish_app(admin, app_id))


@router.post(
    "/{app_id}/unpublish",
    summary="Take an application out of the catalog (admin)",
    responses=error_responses(403, 404),
)
async def unpublish_app(app_id: AppId, platform: PlatformDep, admin: AdminDep) -> ApplicationOut:
    """Private to its uploader again (who may then delete it); 200 if it was not published."""
    return ApplicationOut.of(await platform.apps.unpublish_app(admin, app_id))
