"""The composition root: settings → database → adapters → sagas → engine → services.

Nothing else chooses adapters or builds the engine (the adapter builders live in
:mod:`cloudphone.adapters`, called from here only). :func:`build_platform` only constructs
objects (no I/O); :meth:`Platform.start` migrates, runs start-up hooks and starts the worker;
:meth:`Platform.close` stops the worker gracefully and releases everything, in reverse order.

Adding a service (one place each, marked ``services:`` below): build its adapters in
:func:`build_platform`, pass its saga factories' output to the engine, then construct the
service and store it as a typed attribute on :class:`Platform`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from cloudphone import schema
from cloudphone.adapters import (
    AppsApkSource,
    build_device_runtime,
    build_object_storage,
    build_payment_providers,
    build_telemetry,
)
from cloudphone.apps.service import AppsService
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.upload import build_upload_saga
from cloudphone.billing.refund import RefundTiming, build_refund_saga
from cloudphone.billing.service import BillingService
from cloudphone.demo import build_demo_saga
from cloudphone.deployment import Deployment, claim_directory, load_deployment
from cloudphone.devices.create import build_create_saga, step_retry_policy
from cloudphone.devices.delete import build_delete_saga
from cloudphone.devices.runtimes.base import DeviceRuntime
from cloudphone.devices.service import DeviceService
from cloudphone.extras import require_extra
from cloudphone.installs.install import build_install_saga
from cloudphone.installs.records import drop_device_txn
from cloudphone.installs.service import InstallService
from cloudphone.installs.spool import ApkSpool
from cloudphone.installs.sweep import SpoolSweeper
from cloudphone.installs.uninstall import build_uninstall_saga
from cloudphone.saga import Database, Saga, SagaEngine
from cloudphone.saga.store.disconnects import is_database_unavailable
from cloudphone.saga.tracing import NO_TRACER
from cloudphone.saga.worker import Worker
from cloudphone.settings import Settings

if TYPE_CHECKING:
    from cloudphone.saga.ports import StepHooks
    from cloudphone.telemetry import Telemetry

log = logging.getLogger("cloudphone.platform")

Hook = Callable[[], Awaitable[None]]
"""An async start-up or shut-down action of an adapter or service."""
Claim = Callable[[Deployment], Awaitable[None]]
"""Makes a directory or store the deployment's (see :mod:`cloudphone.deployment`)."""


class Platform:
    """Everything one process runs: database, saga engine, metrics registry and services.

    Attributes:
        settings: The settings it was built from.
        db: The database shared by the engine and the services (one pool).
        engine: The saga engine, knowing every saga definition.
        registry: Prometheus registry of the engine, HTTP and process metrics.
        with_worker: Whether :meth:`start` runs a worker in this process.
        telemetry: OpenTelemetry tracing, or None when it is off.
        deployment: The database's deployment, known once started.
        install_spool_sweeper: The sweeper of this worker's install spool (None without a
            worker); started and stopped with the platform.
    """

    # services: each service adds one typed attribute here, set in build_platform, e.g.
    billing: BillingService
    devices: DeviceService
    apps: AppsService
    installs: InstallService
    install_spool_sweeper: SpoolSweeper | None = None

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: SagaEngine,
        registry: CollectorRegistry,
        *,
        with_worker: bool,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.db = db
        self.engine = engine
        self.registry = registry
        self.with_worker = with_worker
        self._on_start: list[Hook] = []
        self._on_close: list[Hook] = []
        self._claims: list[Claim] = []
        self.deployment: Deployment | None = None
        self._stack: AsyncExitStack | None = None
        self._worker: Worker | None = None
        self.started_at: datetime | None = None

    def on_start(self, hook: Hook) -> None:
        """Run ``hook`` in :meth:`start`, after migrations and before the worker starts."""
        self._on_start.append(hook)

    def on_claim(self, claim: Claim) -> None:
        """Run ``claim(deployment)`` in :meth:`start`, after migrations, before the hooks.

        Every directory and store outside the database is claimed, so a deployment refuses to
        start on another one's (before a sweep or reconcile could take its state for orphans).
        """
        self._claims.append(claim)

    async def claim_deployment(self) -> Deployment:
        """Load (on first start: make) the deployment id, then claim every directory and store.

        :meth:`start` does it; operator commands that act on stores without starting the
        platform call it first.

        Raises:
            DeploymentMismatchError: A directory or store belongs to another database.
        """
        self.deployment = await load_deployment(self.db)
        for claim in self._claims:
            await claim(self.deployment)
        return self.deployment

    def on_close(self, hook: Hook) -> None:
        """Run ``hook`` in :meth:`close`, after the worker stopped (reverse order of adding)."""
        self._on_close.append(hook)

    @property
    def worker(self) -> Worker | None:
        """The worker running in this process, if any."""
        return self._worker

    async def start(self) -> None:
        """Migrate (if ``auto_migrate``), claim, run start-up hooks, then start the worker.

        Raises:
            DeploymentMismatchError: A directory or store belongs to another database.
        """
        if self._stack is not None:
            raise RuntimeError("platform already started")
        stack = AsyncExitStack()
        try:
            stack.push_async_callback(self._release)
            await self._prepare_database()
            for hook in self._on_start:
                await hook()
            for hook in self._on_close:
                stack.push_async_callback(hook)
            if self.with_worker:
                self._worker = await stack.enter_async_context(
                    self.engine.worker(
                        self.settings.worker_concurrency, grace=self.settings.shutdown_grace
                    )
                )
                log.info(
                    "worker started",
                    extra={
                        "worker_id": self.engine.worker_id,
                        "concurrency": self.settings.worker_concurrency,
                    },
                )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self.started_at = datetime.now(UTC)

    async def _prepare_database(self) -> None:
        """Migrate (if ``auto_migrate``) and claim, waiting up to ``startup_wait`` for the database.

        A process started while the database restarts (a supervisor bringing a worker back
        during an outage) waits for it instead of exiting; other errors are raised at once.
        """
        deadline = time.monotonic() + self.settings.startup_wait.total_seconds()
        delay, waited = 0.1, False
        while True:
            try:
                if self.settings.auto_migrate:
                    await asyncio.to_thread(schema.upgrade, self.settings.database_url)
                await self.claim_deployment()
            except Exception as error:
                if not is_database_unavailable(error) or time.monotonic() + delay > deadline:
                    raise
                if not waited:
                    waited = True
                    log.warning(
                        "database unavailable at start-up; waiting for it",
                        extra={"error": f"{type(error).__name__}: {error}"[:300]},
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if waited:
                log.info("database reachable; starting")
            return

    async def close(self) -> None:
        """Stop the worker gracefully (see ``shutdown_grace``), run shut-down hooks, disconnect."""
        stack, self._stack = self._stack, None
        if stack is None:
            await self._release()
            return
        await stack.aclose()
        self._worker = None
        log.info("platform stopped")

    async def _release(self) -> None:
        await self.engine.close()
        await self.db.dispose()

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def worker_alive(self, now: datetime | None = None) -> bool | None:
        """Whether this process's worker completed a claim or heartbeat round recently.

        Returns None when this process runs no worker. "Recently" is one lease: a worker
        silent for that long is stuck, and its runs are being taken over.
        """
        worker = self._worker
        if worker is None:
            return None
        alive_at = worker.alive_at
        if alive_at is None:
            return False
        return (now or datetime.now(UTC)) - alive_at <= max(
            self.settings.worker_lease, self.settings.worker_poll_interval * 3
        )


def build_registry() -> CollectorRegistry:
    """A registry with process, platform and GC metrics (engine and HTTP add theirs)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def build_platform(
    settings: Settings,
    *,
    with_worker: bool,
    telemetry: Telemetry | None = None,
    hooks: StepHooks | None = None,
    device_runtime: DeviceRuntime | None = None,
) -> Platform:
    """Wire the platform from ``settings`` (no I/O; call :meth:`Platform.start` next).

    Args:
        settings: Loaded settings (see :func:`cloudphone.settings.load_settings`).
        with_worker: Run a worker in this process when started (``serve``, ``worker``); the
            CLI's read and operator commands and ``serve --no-worker`` do not.
        telemetry: Tracing to use (the API's, or a test's); default: built from
            ``settings.otel`` (see :func:`build_telemetry`). The platform closes it.
        hooks: Called around each step attempt (fault injection in tests and chaos workers:
            :class:`cloudphone.saga.testing.FaultInjector`); None in production.
        device_runtime: The devices' runtime, instead of the one ``settings.devices`` chooses
            (a test's runtime on its private Docker daemon); the platform closes it.
    """
    registry = build_registry()
    telemetry = telemetry or build_telemetry(settings)
    if not settings.is_sqlite:
        require_extra("postgres", needed_for="CLOUDPHONE_DATABASE_URL=postgresql+…")
    db = Database(settings.database_url, pool_size=settings.db_pool_size)

    # adapters (ports): services build theirs from settings.billing / .apps / .devices here.
    payment_providers = build_payment_providers(settings, db)
    device_runtime = device_runtime or build_device_runtime(settings)
    object_storage = build_object_storage(settings)
    upload_spool = UploadSpool(settings.apps.temp_dir or settings.data_dir / "uploads")
    install_spool = ApkSpool(settings.data_dir / "installs")
    apk_source = AppsApkSource()  # installs read APKs through the apps service, set below

    sagas: list[Saga] = []
    if settings.demo:
        sagas.append(build_demo_saga())
    # services: sagas.append(build_refund_saga(provider)) … built from the adapters above.
    sagas.append(
        build_refund_saga(payment_providers, db, timing=RefundTiming.from_config(settings.billing))
    )
    sagas.append(build_create_saga(device_runtime, settings.devices))
    sagas.append(build_delete_saga(device_runtime, settings.devices, cleanups=[drop_device_txn]))
    sagas.append(
        build_upload_saga(
            object_storage,
            upload_spool,
            timeout=settings.apps.upload_timeout,
            store_timeout=settings.apps.store_attempt_timeout,
        )
    )
    device_steps = step_retry_policy(settings.devices)
    sagas.append(
        build_install_saga(
            device_runtime,
            apk_source,
            install_spool,
            retry=device_steps,
            max_apk_bytes=settings.apps.max_upload_bytes,
        )
    )
    sagas.append(build_uninstall_saga(device_runtime, retry=device_steps))

    engine = SagaEngine(
        db,
        sagas,
        worker_id=settings.worker_id,
        lease=settings.worker_lease,
        poll_interval=settings.worker_poll_interval,
        step_group=settings.worker_step_group,
        carry_plain_steps=settings.worker_carry_plain_steps,
        registry=registry,
        tracer=telemetry.saga_tracer if telemetry is not None else NO_TRACER,
        hooks=hooks,
    )
    platform = Platform(
        settings, db, engine, registry, with_worker=with_worker, telemetry=telemetry
    )
    if telemetry is not None:
        platform.on_close(telemetry.close)  # added first, so it runs last: flushes every span
    # The install spool lives inside the data directory, claimed with it.
    spool_dir = upload_spool.directory
    for place, directory in (("data directory", settings.data_dir), ("upload spool", spool_dir)):
        platform.on_claim(functools.partial(_claim_directory, directory, place))
    platform.on_claim(object_storage.claim)
    platform.on_claim(device_runtime.claim)

    platform.billing = BillingService(
        engine,
        payment_providers,
        default_provider=settings.billing.provider,
        reconcile_age=settings.billing.payment_reconcile_age,
        reconcile_interval=settings.billing.payment_reconcile_interval,
    )
    for provider in payment_providers.values():
        platform.on_close(provider.close)
    if with_worker:
        # Payments left PENDING (a crash or a lost answer) are settled from the provider.
        platform.on_start(platform.billing.start_reconciling)
        platform.on_close(platform.billing.stop_reconciling)
    platform.devices = DeviceService(engine, settings.devices, device_runtime)
    platform.on_close(device_runtime.close)
    if with_worker:
        # "Cleaned on start": containers no live device owns go, stale creations are repaired.
        platform.on_start(platform.devices.sweep_on_start)
        platform.on_close(platform.devices.stop_sweeping)
        # A device whose process or container died is restarted within seconds.
        platform.on_start(platform.devices.start_watching)
        platform.on_close(platform.devices.stop_watching)
    platform.apps = AppsService(db, engine, object_storage, upload_spool, settings.apps)
    platform.on_start(object_storage.start)
    platform.on_close(object_storage.close)
    if with_worker:
        # Spooled uploads of finished (or unknown) sagas go on start, then periodically.
        platform.on_start(platform.apps.start_housekeeping)
        platform.on_close(platform.apps.stop_housekeeping)
    apk_source.apps = platform.apps
    platform.installs = InstallService(engine, apk_source)
    if with_worker:
        # Spooled APKs of finished (or unknown) installs go on start, then periodically.
        platform.install_spool_sweeper = spool_sweeper = SpoolSweeper(
            engine,
            install_spool,
            grace=settings.devices.install_spool_grace,
            interval=settings.devices.install_spool_sweep_interval,
            registry=registry,
        )
        platform.on_start(spool_sweeper.start)
        platform.on_close(spool_sweeper.stop)
    # services: platform.billing = BillingService(db, engine, provider), and register any
    # async set-up / tear-down with platform.on_start(...) / platform.on_close(...).
    return platform


async def _claim_directory(directory: Path, place: str, deployment: Deployment) -> None:
    await asyncio.to_thread(claim_directory, directory, deployment, place=place)
