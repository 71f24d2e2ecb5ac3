"""Apps settings (the ``apps`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class AppsConfig(BaseModel):
    """Object storage choice and upload limits (env ``CLOUDPHONE_APPS__*``)."""

    storage: Literal["filesystem", "s3"] = "filesystem"
    """``filesystem`` (the embedded default, under ``storage_root``) or ``s3``."""

    storage_root: Path | None = None
    """Root of the filesystem store; default ``<data_dir>/objects``."""

    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    """Largest accepted APK (default 2 GiB)."""

    s3_endpoint: str | None = None
    """S3 endpoint URL (MinIO, SeaweedFS); None for AWS."""

    s3_region: str = "us-east-1"
    s3_bucket: str = "cloudphone-apps"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_create_bucket: bool = True
    """Create the bucket at start if it is missing."""
