"""The adapters :mod:`cloudphone.platform` builds from settings, and the port between services.

Each builder imports its adapter's SDK only when chosen (the real adapters' SDKs cost seconds
of start-up, and their extras may be absent: :func:`~cloudphone.extras.require_extra` says
which to install). :class:`AppsApkSource` is the installs' view of the apps service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from cloudphone.apps.service import AppsService
from cloudphone.apps.storage.base import ObjectStorage
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.billing.providers.base import PaymentProvider
from cloudphone.billing.providers.sandbox import SandboxProvider
from cloudphone.devices.runtimes.base import DeviceRuntime
from cloudphone.devices.runtimes.local import LocalRuntime
from cloudphone.domain import Principal
from cloudphone.extras import require_extra
from cloudphone.installs.ports import ApkInfo
from cloudphone.saga import Database
from cloudphone.settings import Settings

if TYPE_CHECKING:
    from cloudphone.telemetry import Telemetry


class AppsApkSource:
    """Installs' :class:`~cloudphone.installs.ports.ApkSource` over the apps service.

    The install saga is built before the services (the engine needs it, the services need
    the engine), so the service is given once it exists.
    """

    apps: AppsService | None = None

    def _service(self) -> AppsService:
        if self.apps is None:
            raise RuntimeError("the apps service is not wired yet")
        return self.apps

    async def describe(self, app_id: str, principal: Principal) -> ApkInfo:
        """The application, if ``principal`` may read it and it is AVAILABLE."""
        return await self._service().installable_app(principal, app_id)

    def open(
        self, app_id: str, principal: Principal
    ) -> AbstractAsyncContextManager[tuple[ApkInfo, AsyncIterator[bytes]]]:
        """Its record and its bytes from object storage."""
        return self._service().open_apk(principal, app_id)


def build_telemetry(settings: Settings) -> Telemetry | None:
    """OpenTelemetry from ``settings.otel``, or None when it is off (then nothing of it loads)."""
    if not settings.otel.enabled:
        return None
    # Imported only when on: the otel extra may be absent (settings checked that it is not).
    from cloudphone.telemetry import Telemetry

    return Telemetry(settings.otel)


def build_payment_providers(settings: Settings, db: Database) -> dict[str, PaymentProvider]:
    """Billing's payment providers: the sandbox always, Stripe when a key is configured."""
    billing = settings.billing
    providers: dict[str, PaymentProvider] = {"sandbox": SandboxProvider(db, billing.sandbox)}
    if billing.provider == "stripe" or billing.stripe_api_key is not None:
        require_extra("stripe", needed_for="CLOUDPHONE_BILLING__PROVIDER=stripe (or a Stripe key)")
    if billing.stripe_api_key is not None:
        # Imported only when used: the real adapters' SDKs cost seconds of start-up.
        from cloudphone.billing.providers.stripe import StripeProvider

        providers["stripe"] = StripeProvider(billing)
    return providers


def build_object_storage(settings: Settings) -> ObjectStorage:
    """The apps service's object store: the filesystem (default) or S3."""
    if settings.apps.storage == "s3":
        require_extra("s3", needed_for="CLOUDPHONE_APPS__STORAGE=s3")
        from cloudphone.apps.storage.s3 import S3Storage

        return S3Storage.from_config(settings.apps)
    return FilesystemStorage(settings.apps.storage_root or settings.data_dir / "objects")


def build_device_runtime(settings: Settings) -> DeviceRuntime:
    """The devices service's runtime: local child processes (default) or Docker."""
    devices = settings.devices
    if devices.runtime == "docker":
        require_extra("docker", needed_for="CLOUDPHONE_DEVICES__RUNTIME=docker")
        from cloudphone.devices.runtimes.docker import DockerOptions, DockerRuntime

        return DockerRuntime(DockerOptions.from_config(devices))
    if devices.local_protocol == "adb":  # adb-shell comes with the docker extra
        require_extra("docker", needed_for="CLOUDPHONE_DEVICES__LOCAL_PROTOCOL=adb")
    state_dir = devices.local_state_dir or settings.data_dir / "devices"
    return LocalRuntime(
        state_dir,
        host=devices.adb_host,
        protocol=devices.local_protocol,
        init_commands=devices.init_commands,
    )
