"""Apps settings (the ``apps`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from cloudphone.config import Duration, Section

MiB = 1024 * 1024


class AppsConfig(Section):
    """Object storage choice and upload limits (env ``CLOUDPHONE_APPS__*``)."""

    storage: Literal["filesystem", "s3"] = "filesystem"
    """``filesystem`` (the embedded default, under ``storage_root``) or ``s3``."""

    storage_root: Path | None = None
    """Root of the filesystem store; default ``<data_dir>/objects``."""

    temp_dir: Path | None = None
    """Where uploads are spooled until their saga ends; default ``<data_dir>/uploads``. API
    processes and the workers that run ``app_upload`` must share it (same host or volume)."""

    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    """Largest accepted APK (default 2 GiB)."""

    upload_timeout: Duration = Field(default=timedelta(minutes=10), gt=timedelta(0))
    """Deadline of an ``app_upload`` saga: past it, an unfinished upload is compensated."""

    store_attempt_timeout: Duration = Field(default=timedelta(minutes=5), gt=timedelta(0))
    """Longest one attempt of ``UPLOAD_TO_STORAGE`` may take before it is retried."""

    part_size: int = Field(default=16 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    """S3 multipart part size; files up to one part are sent with a single PUT."""

    part_concurrency: int = Field(default=4, ge=1, le=64)
    """Parts of one upload sent at once."""

    download_url_ttl: Duration = Field(
        default=timedelta(minutes=15), ge=timedelta(seconds=1), le=timedelta(days=7)
    )
    """Lifetime of a presigned download URL (made on request, never stored)."""

    temp_sweep_interval: Duration = Field(default=timedelta(minutes=5), gt=timedelta(0))
    """How often spooled uploads whose saga is over (or unknown) are removed; also on start."""

    s3_endpoint: str | None = None
    """S3 endpoint URL (MinIO, SeaweedFS); None for AWS."""

    s3_region: str = "us-east-1"
    """Region the requests are signed for."""

    s3_bucket: str = Field(default="cloudphone-apps", min_length=3, max_length=63)
    """Bucket holding the APKs (under the ``apps/`` prefix)."""

    s3_prefix: str = Field(default="", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*$")
    """Key prefix inside the bucket (empty, or ending in ``/``), to share a bucket."""

    s3_access_key: SecretStr | None = None
    """Access key id; None uses the AWS default chain (environment, profile, instance role)."""

    s3_secret_key: SecretStr | None = None
    """Secret access key (never logged)."""

    s3_create_bucket: bool = True
    """Create the bucket at start if it is missing."""

    s3_connect_timeout: Duration = Field(default=timedelta(seconds=5), gt=timedelta(0))
    """Longest wait to establish a connection to the S3 endpoint."""

    s3_read_timeout: Duration = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """Longest wait of one socket read from the S3 endpoint."""

    s3_max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts of one S3 request inside the client (the saga retries on top)."""
