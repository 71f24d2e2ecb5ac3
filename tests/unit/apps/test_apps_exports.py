"""The apps packages' public surface is exactly what ``__all__`` says (changes are deliberate)."""

from __future__ import annotations

import importlib

import pytest
from pydantic import SecretStr

from cloudphone.apps.config import AppsConfig
from cloudphone.apps.keys import ObjectKey, object_key
from cloudphone.apps.storage.s3 import S3Storage
from cloudphone.apps.upload import UploadInput

EXPECTED = {
    "cloudphone.apps": [
        "APP_UPLOAD", "LIVE", "STEPS", "AppScope", "AppStatus", "Application", "AppsConfig",
        "AppsService", "ReconcileReport", "Reconciler", "UploadAccepted", "UploadInput",
        "UploadSpool", "build_upload_saga",
    ],
    "cloudphone.apps.storage": [
        "Download", "InvalidObjectKeyError", "LocalFile", "ObjectInfo", "ObjectStorage",
        "PendingUpload", "PresignedUrl", "StorageError", "StorageUnavailableError", "check_key",
    ],
    "cloudphone.apk": [
        "MAX_ARSC_SIZE", "MAX_MANIFEST_SIZE", "ApkError", "ApkInfo", "EntryTooLargeError",
        "InvalidZipError", "ManifestInvalidError", "ManifestMissingError",
        "is_valid_package_name", "parse_apk", "parse_manifest",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_public_names_are_locked(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(EXPECTED[module])
    for name in imported.__all__:
        assert hasattr(imported, name), name


def test_object_keys_round_trip_and_refuse_strangers() -> None:
    saga = "0b8a4f7e-2c1d-4e5f-9a6b-7c8d9e0f1a2b"
    key = object_key("com.example.app", 42, saga)
    assert key == f"apps/com.example.app/42/{saga}.apk"
    assert ObjectKey.parse(key) == ObjectKey("com.example.app", 42, saga)
    for stranger in (
        "apps/x/1/not-a-uuid.apk",
        f"other/a.b/1/{saga}.apk",
        f"apps/a.b/-1/{saga}.apk",
    ):
        assert ObjectKey.parse(stranger) is None


def test_s3_credentials_never_show() -> None:
    config = AppsConfig(
        storage="s3", s3_access_key=SecretStr("AKIDSECRET"), s3_secret_key=SecretStr("hush")
    )
    store = S3Storage.from_config(config)
    assert "AKIDSECRET" not in repr(store)
    assert "hush" not in repr(store)
    assert "hush" not in repr(config)
    assert "hush" not in str(config.model_dump())


def test_saga_data_holds_no_credentials() -> None:
    assert set(UploadInput.__dataclass_fields__) == {
        "app_id", "package_name", "version_code", "version_name", "label", "min_sdk",
        "target_sdk", "permissions", "size", "sha256", "spool_file", "uploaded_by",
        "description",
    }  # fmt: skip
