"""The deployment marker of an S3 store: which deployment's objects live under its prefix.

``<prefix>.cloudphone-deployment`` (JSON) holds the deployment id and database of the first
deployment that started on the prefix. No object key can start with a dot, and listings
leave the marker out.
The first writer wins (``If-None-Match: *`` where the server supports it; every writer reads
the marker back, so of two racing deployments only one goes on).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from cloudphone.apps.storage.s3_support import error_code, http_status, translated
from cloudphone.deployment import STAMP_FILE, Deployment, DeploymentMismatchError, stamp_of

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

MARKER_NAME = STAMP_FILE


async def claim_prefix(client: S3Client, bucket: str, prefix: str, this: Deployment) -> None:
    """Write the marker if there is none, then make sure it names ``this``.

    Raises:
        DeploymentMismatchError: The prefix belongs to another deployment.
        StorageUnavailableError: S3 cannot be reached (claim again later).
    """
    key = prefix + MARKER_NAME
    owner = await _read(client, bucket, key)
    if owner is None:
        await _create(client, bucket, key, this)
        owner = await _read(client, bucket, key)
    if owner is None or owner.id != this.id:
        place = f"object store s3://{bucket}/{prefix}"
        raise DeploymentMismatchError(
            place,
            owner or Deployment("unknown (unreadable marker)", "unknown"),
            this,
            remedy=f"delete s3://{bucket}/{key}",
        )


async def _read(client: S3Client, bucket: str, key: str) -> Deployment | None:
    async with translated("read deployment marker", key):
        try:
            answer = await client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if http_status(error) == 404:
                return None
            raise
        async with answer["Body"] as body:
            data = await body.read()
    try:
        return stamp_of(json.loads(data)) or Deployment("unknown (unreadable marker)", "unknown")
    except ValueError:
        return Deployment("unknown (unreadable marker)", "unknown")


async def _create(client: S3Client, bucket: str, key: str, this: Deployment) -> None:
    body = json.dumps(this.as_stamp()).encode()
    async with translated("write deployment marker", key):
        try:
            await client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        except ClientError as error:
            if error_code(error) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise  # someone else wrote it first: the read-back says who
