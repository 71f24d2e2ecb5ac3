"""Bad uploads get a clear 4xx-class error with a reason, and leave nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloudphone.apps.config import AppsConfig
from cloudphone.domain import InvalidInputError, PayloadTooLargeError, Principal
from tests.support.apk_builder import build_apk_bytes, corrupt_variants
from tests.support.apps_harness import Apps, MakeApps, apk, chunks_of

GOOD = build_apk_bytes(package="com.example.src", label="Src")
VARIANTS = corrupt_variants(GOOD)


async def assert_nothing_left(apps: Apps) -> None:
    assert await apps.objects() == []
    assert await apps.pending() == []
    assert await apps.run_count() == 0
    assert apps.spooled() == []


@pytest.mark.parametrize(
    ("variant", "code"),
    [
        ("empty", "invalid_zip"),
        ("not_a_zip", "invalid_zip"),
        ("truncated_zip", "invalid_zip"),
        ("bad_crc", "invalid_zip"),
        ("no_manifest", "manifest_missing"),
        ("manifest_garbage", "manifest_invalid"),
        ("manifest_text_xml", "manifest_invalid"),
    ],
)
async def test_not_an_apk_is_refused_with_its_reason(
    apps: Apps, user: Principal, variant: str, code: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await apps.upload(user, VARIANTS[variant])
    assert refused.value.code == code
    assert refused.value.message.startswith("not a valid APK")
    await assert_nothing_left(apps)


async def test_an_invalid_package_name_is_refused(apps: Apps, user: Principal) -> None:
    bad = build_apk_bytes(package="nodots", label="x")
    with pytest.raises(InvalidInputError) as refused:
        await apps.upload(user, bad)
    assert refused.value.code == "invalid_package_name"
    await assert_nothing_left(apps)


async def test_a_too_long_description_is_refused(apps: Apps, user: Principal, package: str) -> None:
    with pytest.raises(InvalidInputError, match="description"):
        await apps.upload(user, apk(package, 1), description="d" * 1001)
    await assert_nothing_left(apps)


async def test_an_upload_over_the_limit_stops_reading_and_keeps_nothing(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    apps = await make_apps(config=AppsConfig(max_upload_bytes=100_000))
    data = apk(package, 1, big_asset_size=200_000)
    assert len(data) > 100_000
    served: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data, 10_000):
            served.append(len(chunk))
            yield chunk

    with pytest.raises(PayloadTooLargeError) as refused:
        await apps.service.upload_app(user, body())
    assert refused.value.code == "payload_too_large"
    assert "100000" in refused.value.message
    assert sum(served) <= 100_000 + 10_000  # it stopped at the limit, not at the end
    await assert_nothing_left(apps)


async def test_an_upload_exactly_at_the_limit_is_accepted(
    make_apps: MakeApps, user: Principal, package: str
) -> None:
    data = apk(package, 1)
    apps = await make_apps(config=AppsConfig(max_upload_bytes=len(data)))
    accepted = await apps.upload(user, data)
    assert accepted.application.size == len(data)


async def test_a_manifest_with_nul_bytes_in_texts_is_stored_without_them(
    apps: Apps, user: Principal, package: str
) -> None:
    data = apk(package, 1, label="La\x00bel", label_as_resource=False, version_name="1\x00.0")
    _run, app = await apps.upload_and_wait(user, data)
    assert app is not None
    assert (app.label, app.version_name) == ("Label", "1.0")
