"""The S3 object store (AWS, MinIO, SeaweedFS) through one aiobotocore client per process.

Files up to one part go up in a single streamed PUT; larger ones as a multipart upload whose
parts are windows of the spooled file (constant memory), several at a time. A failed multipart
upload is aborted on the spot (shielded from cancellation), and every ``put_file`` and
``delete`` first aborts earlier unfinished uploads of its key, so retries and compensations
leave no multipart leftovers. Credentials come from settings as ``SecretStr`` and are never
logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import APK_MEDIA_TYPE
from cloudphone.apps.storage.base import (
    Download,
    ObjectInfo,
    PendingUpload,
    PresignedUrl,
    StorageError,
    StorageUnavailableError,
    check_key,
)
from cloudphone.apps.storage.s3_marker import MARKER_NAME, claim_prefix
from cloudphone.apps.storage.s3_support import PartReader, error_code, http_status, translated
from cloudphone.deployment import Deployment, DeploymentMismatchError

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("cloudphone.apps.s3")

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest part (every part but the last)."""

PartHook = Callable[[str, int, int], Awaitable[None]]
"""Called after each stored part with (key, part number, number of parts): progress logs."""


class S3Storage:
    """Objects in one bucket, under an optional key prefix.

    Args:
        bucket: Bucket name.
        endpoint_url: S3 endpoint (MinIO, SeaweedFS); None for AWS.
        region: Region requests are signed for.
        access_key: Access key id; None uses the AWS default credential chain.
        secret_key: Secret access key.
        prefix: Prepended to every key (``""`` or ending in ``/``): several deployments can
            share a bucket.
        create_bucket: Create the bucket on start when it is missing.
        part_size: Multipart part size (>= 5 MiB); smaller files use one PUT.
        part_concurrency: Parts in flight per upload.
        connect_timeout: Seconds to connect.
        read_timeout: Seconds one socket read may wait.
        max_attempts: Attempts per request inside the client.
        on_part: Progress hook, called after each part.
        session: An aiobotocore session to make the client from (loading the S3 model costs
            ~0.5 s per session; share one when making many stores, as tests do).
    """

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: SecretStr | None = None,
        secret_key: SecretStr | None = None,
        prefix: str = "",
        create_bucket: bool = True,
        part_size: int = 16 * 1024 * 1024,
        part_concurrency: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        on_part: PartHook | None = None,
        session: AioSession | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if prefix:
            check_key(prefix.rstrip("/"))
            if not prefix.endswith("/"):
                raise ValueError("prefix must be empty or end with '/'")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = prefix
        self.create_bucket = create_bucket
        self.part_size = part_size
        self.part_concurrency = part_concurrency
        self._credentials = (access_key, secret_key)
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            signature_version="s3v4",  # SigV2 presigned URLs ignore response overrides
            s3={"addressing_style": "path"},
            max_pool_connections=max(10, 2 * part_concurrency),
        )
        self._on_part = on_part
        self._session = session
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._bucket_ready = False
        self._deployment: Deployment | None = None
        self._claimed = False

    @classmethod
    def from_config(cls, config: AppsConfig, *, on_part: PartHook | None = None) -> S3Storage:
        """The store the ``s3_*`` settings describe."""
        return cls(
            bucket=config.s3_bucket,
            endpoint_url=config.s3_endpoint,
            region=config.s3_region,
            access_key=config.s3_access_key,
            secret_key=config.s3_secret_key,
            prefix=config.s3_prefix,
            create_bucket=config.s3_create_bucket,
            part_size=config.part_size,
            part_concurrency=config.part_concurrency,
            connect_timeout=config.s3_connect_timeout.total_seconds(),
            read_timeout=config.s3_read_timeout.total_seconds(),
            max_attempts=config.s3_max_attempts,
            on_part=on_part,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint={self.endpoint_url!r})"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client and make sure the bucket exists (a later call retries if S3 is down)."""
        if self._client is None:
            access, secret = self._credentials
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(
                (self._session or get_session()).create_client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=access.get_secret_value() if access else None,
                    aws_secret_access_key=secret.get_secret_value() if secret else None,
                    config=self._config,
                )
            )
            self._stack = stack
        try:
            await self._ensure_bucket()
        except StorageUnavailableError as error:
            log.warning("object storage unavailable at start; will retry: %s", error)

    async def claim(self, deployment: Deployment) -> None:
        """Mark the prefix as ``deployment``'s (see :mod:`.s3_marker`).

        If S3 is down now, the check runs again before the first listing: reconciling a
        prefix that belongs to another deployment would delete its objects.
        """
        self._deployment = deployment
        await self.start()
        try:
            await self._verify_claim()
        except StorageUnavailableError as error:
            log.warning("could not check the deployment marker yet; will before listing: %s", error)
        except DeploymentMismatchError:
            await self.close()  # the platform does not start, so it will not close the store
            raise

    async def _verify_claim(self) -> None:
        if self._deployment is None or self._claimed:
            return
        await self._ensure_bucket()
        await claim_prefix(self.client, self.bucket, self.prefix, self._deployment)
        self._claimed = True

    async def close(self) -> None:
        """Close the client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> S3Client:
        """The aiobotocore client (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("S3Storage is not started")
        return self._client

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        async with translated("check bucket", self.bucket):
            try:
                await self.client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if http_status(error) != 404 or not self.create_bucket:
                    raise
                await self._create_bucket()
        self._bucket_ready = True

    async def _create_bucket(self) -> None:
        try:
            await self.client.create_bucket(Bucket=self.bucket)
            log.info("created bucket", extra={"bucket": self.bucket})
        except ClientError as error:
            if error_code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- writing ------------------------------------------------------------------------

    async def put_file(self, key: str, path: Path, *, size: int) -> None:
        """Upload ``path`` under ``key``: one PUT up to a part, multipart above."""
        full = self._full(key)
        await self._ensure_bucket()
        await self._abort_pending(full)
        if size <= self.part_size:
            async with translated("upload", full):
                with path.open("rb") as body:
                    await self.client.put_object(
                        Bucket=self.bucket, Key=full, Body=body, ContentType=APK_MEDIA_TYPE
                    )
            if self._on_part is not None:
                await self._on_part(key, 1, 1)
            return
        await self._put_multipart(key, full, path, size)

    async def _put_multipart(self, key: str, full: str, path: Path, size: int) -> None:
        async with translated("start multipart upload", full):
            created = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ContentType=APK_MEDIA_TYPE
            )
        upload_id = created["UploadId"]
        offsets = range(0, size, self.part_size)
        limit = asyncio.Semaphore(self.part_concurrency)

        async def part(number: int, offset: int) -> CompletedPartTypeDef:
            async with limit, translated(f"upload part {number} of", full):
                with PartReader(path, offset, min(self.part_size, size - offset)) as body:
                    sent = await self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=cast(IO[Any], body),
                    )
            if self._on_part is not None:
                await self._on_part(key, number, len(offsets))
            return {"PartNumber": number, "ETag": sent["ETag"]}

        try:
            parts = await _gather_all([part(i + 1, o) for i, o in enumerate(offsets)])
            async with translated("complete multipart upload", full):
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            # Shielded: a cancelled attempt (timeout, deadline) still cleans up after itself.
            with contextlib.suppress(BotoCoreError, ClientError):
                await asyncio.shield(self._abort(full, upload_id))
            raise

    async def _abort(self, full: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id
            )
        except ClientError as error:
            if error_code(error) != "NoSuchUpload":
                raise

    async def _abort_pending(self, full: str) -> None:
        """Abort every unfinished multipart upload of exactly ``full``."""
        async with translated("abort unfinished uploads of", full):
            paginator = self.client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for upload in page.get("Uploads", []):
                    if upload.get("Key") == full and "UploadId" in upload:
                        await self._abort(full, upload["UploadId"])

    async def delete(self, key: str) -> None:
        """Abort unfinished uploads of ``key``, then delete the object (missing is fine)."""
        full = self._full(key)
        await self._abort_pending(full)
        async with translated("delete", full):
            await self.client.delete_object(Bucket=self.bucket, Key=full)

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Abort one unfinished multipart upload."""
        full = self._full(upload.key)
        async with translated("abort upload of", full):
            await self._abort(full, upload.upload_id)

    # -- reading ------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo | None:
        """HEAD the object."""
        full = self._full(key)
        async with translated("stat", full):
            try:
                head = await self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as error:
                if http_status(error) == 404:
                    return None
                raise
        return ObjectInfo(key, int(head["ContentLength"]), head.get("LastModified"))

    async def read(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """GET the object and stream its body (a 404 is :class:`StorageError`)."""
        full = self._full(key)
        async with translated("read", full):
            try:
                got = await self.client.get_object(Bucket=self.bucket, Key=full)
            except ClientError as error:
                if http_status(error) == 404 or error_code(error) == "NoSuchKey":
                    raise StorageError(f"no object {key!r}") from None
                raise
        body = got["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(chunk_size)
                except (OSError, TimeoutError, aiohttp.ClientError, BotoCoreError) as error:
                    raise StorageUnavailableError(f"read {full}: {error!r}") from error
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (``list_objects_v2``, paginated)."""
        await self._verify_claim()
        async with translated("list", self.prefix + prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            async for page in pages:
                for item in page.get("Contents", []):  # no "Contents" at all when empty
                    if item["Key"] == self.prefix + MARKER_NAME:
                        continue
                    yield ObjectInfo(
                        item["Key"][len(self.prefix) :], int(item["Size"]), item["LastModified"]
                    )

    async def list_pending_uploads(self, prefix: str) -> AsyncIterator[PendingUpload]:
        """Unfinished multipart uploads whose key starts with ``prefix``."""
        await self._verify_claim()
        async with translated("list unfinished uploads", self.prefix + prefix):
            paginator = self.client.get_paginator("list_multipart_uploads")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            async for page in pages:
                for upload in page.get("Uploads", []):
                    yield PendingUpload(
                        upload["Key"][len(self.prefix) :],
                        upload["UploadId"],
                        upload.get("Initiated"),
                    )

    async def download(self, key: str, *, filename: str, ttl: timedelta) -> Download:
        """A presigned GET URL, made now (no request to S3; never stored)."""
        seconds = max(1, int(ttl.total_seconds()))
        url = await self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._full(key),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
                "ResponseContentType": APK_MEDIA_TYPE,
            },
            ExpiresIn=seconds,
        )
        return PresignedUrl(url, datetime.now(UTC) + timedelta(seconds=seconds))

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)


async def _gather_all(
    coroutines: list[Awaitable[CompletedPartTypeDef]],
) -> list[CompletedPartTypeDef]:
    """Run the parts; on the first failure cancel the others and wait for them to stop."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
