"""The whole platform as real processes, for the chaos soak, with the faults it injects.

A private PostgreSQL cluster (restarted without disturbing the shared server), SeaweedFS for
S3, localstripe behind the fault proxy, ``cloudphone serve --no-worker`` and named
``cloudphone worker`` processes with the local device runtime. Every fault is a method: SIGKILL
a worker or the API (and start the killed one again, the only restart the harness does),
restart PostgreSQL, stop and restart SeaweedFS, SIGKILL a device's agent process, script a
Stripe error or a Stripe answer lost after the refund. Everything is stopped by pid in
:func:`soak_stack`'s ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cloudphone.devices.runtimes.local import LocalRuntime
from tests.support.apps_s3 import ACCESS_KEY, PART_SIZE, REGION, SECRET_KEY, WeedServer
from tests.support.billing_localstripe import API_KEY, LocalStripe
from tests.support.billing_stripe_proxy import StripeFaultProxy
from tests.support.devices_cluster import device_env
from tests.support.postgres_server import PostgresServer, private_postgres
from tests.support.server import WORKER_READY, CloudphoneProcess, spawn_serve

BUCKET = "cloudphone-soak"
S3_PREFIX = "soak/"
DATABASE = "cloudphone_soak"


def soak_env(workdir: Path, url: str, weed: WeedServer, stripe_base: str) -> dict[str, str]:
    """The children's settings: every adapter real, short timings, the sandbox's fault rates."""
    return device_env(
        workdir,
        url,
        CLOUDPHONE_SHUTDOWN_GRACE="3s",
        CLOUDPHONE_APPS__STORAGE="s3",
        CLOUDPHONE_APPS__S3_ENDPOINT=weed.endpoint,
        CLOUDPHONE_APPS__S3_REGION=REGION,
        CLOUDPHONE_APPS__S3_BUCKET=BUCKET,
        CLOUDPHONE_APPS__S3_PREFIX=S3_PREFIX,
        CLOUDPHONE_APPS__S3_ACCESS_KEY=ACCESS_KEY,
        CLOUDPHONE_APPS__S3_SECRET_KEY=SECRET_KEY,
        CLOUDPHONE_APPS__S3_CONNECT_TIMEOUT="1s",
        CLOUDPHONE_APPS__S3_READ_TIMEOUT="10s",
        CLOUDPHONE_APPS__S3_MAX_ATTEMPTS="1",
        CLOUDPHONE_APPS__PART_SIZE=str(PART_SIZE),
        CLOUDPHONE_APPS__PART_CONCURRENCY="2",
        CLOUDPHONE_BILLING__STRIPE_API_KEY=API_KEY,
        CLOUDPHONE_BILLING__STRIPE_API_BASE=stripe_base,
        CLOUDPHONE_BILLING__STRIPE_TIMEOUT="2s",
        CLOUDPHONE_BILLING__STRIPE_CONNECT_TIMEOUT="1s",
        CLOUDPHONE_BILLING__REFUND_POLL_INTERVAL="200ms",
        CLOUDPHONE_BILLING__REFUND_RETRY_INITIAL_INTERVAL="200ms",
        CLOUDPHONE_BILLING__PAYMENT_RECONCILE_AGE="5s",
        CLOUDPHONE_BILLING__PAYMENT_RECONCILE_INTERVAL="1s",
        CLOUDPHONE_BILLING__SANDBOX__LATENCY="10ms",
        CLOUDPHONE_BILLING__SANDBOX__ERROR_RATE="0.05",
        CLOUDPHONE_BILLING__SANDBOX__TIMEOUT_AFTER_REFUND_RATE="0.15",
        CLOUDPHONE_BILLING__SANDBOX__PENDING_POLLS="1",
        CLOUDPHONE_DEVICES__DEFAULT_QUOTA__MAX_DEVICES="2",
        CLOUDPHONE_DEVICES__RETRY_INITIAL_INTERVAL="200ms",
        CLOUDPHONE_DEVICES__SWEEP_INTERVAL="5s",
        CLOUDPHONE_DB_POOL_SIZE="8",
    )


@dataclass
class SoakStack:
    """The started platform and what the faults need to reach it."""

    workdir: Path
    postgres: PostgresServer
    weed: WeedServer
    stripe: StripeFaultProxy
    env: dict[str, str]
    api: CloudphoneProcess
    workers: dict[str, CloudphoneProcess] = field(default_factory=dict)
    spawned: list[CloudphoneProcess] = field(default_factory=list)
    """Every process started, killed ones included (all stopped at the end)."""
    readyz_after_postgres: list[float] = field(default_factory=list)
    """Seconds from PostgreSQL accepting again to the API's ``/readyz`` answering 200."""
    closed: bool = False
    """Set when the stack stops: a fault still running in its thread starts nothing more."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    database_outage: threading.Lock = field(default_factory=threading.Lock)
    """Held while PostgreSQL is down: a killed process is not started again meanwhile (its
    start-up migrates; a supervisor would just try again, this harness restarts only once)."""

    @property
    def base_url(self) -> str:
        """The API's address (the same across its restart)."""
        assert self.api.base_url is not None
        return self.api.base_url

    @property
    def runtime(self) -> LocalRuntime:
        """The workers' local device runtime, seen from outside (same state directory)."""
        return LocalRuntime(Path(self.env["CLOUDPHONE_DATA_DIR"]) / "devices")

    @property
    def processes(self) -> list[CloudphoneProcess]:
        """The API and the workers as they run now."""
        return [self.api, *self.workers.values()]

    def logs(self, tail: int = 3000) -> str:
        """Every current process's log tail (for failure messages)."""
        return "\n".join(f"--- {p.args} (pid {p.pid})\n{p.log(tail)}" for p in self.processes)

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, args: list[str], name: str) -> CloudphoneProcess:
        with self.lock:
            if self.closed:
                raise RuntimeError("the soak stack is stopping: nothing more is started")
            log = self.workdir / f"{name}-{len(self.spawned)}.log"
            process = CloudphoneProcess.spawn(args, env=self.env, log_path=log, cwd=self.workdir)
            self.spawned.append(process)
            return process

    def start_worker(self, name: str) -> CloudphoneProcess:
        """``cloudphone worker --id name`` (same id after a kill: it takes its runs back)."""
        worker = self._spawn(["worker", "--id", name], name)
        self.workers[name] = worker
        worker.wait_log(WORKER_READY, timeout=60)
        return worker

    def kill_worker(self, name: str) -> None:
        """SIGKILL one worker by pid, then start it again and wait until it claims work."""
        with self.database_outage:
            self.workers[name].kill()
            self.start_worker(name)

    def kill_api(self) -> None:
        """SIGKILL the API by pid, then start it again on the same port, waited until healthy."""
        old = self.api
        with self.database_outage:
            old.kill()
            api = self._spawn(old.args, "api")
            api.base_url = old.base_url
            self.api = api
            api.wait_healthy(timeout=60)

    # -- outside systems ------------------------------------------------------------------

    def restart_postgres(self, down_for: float) -> float:
        """Fast shutdown, down ``down_for`` s, start; returns seconds until ``/readyz`` is 200."""
        with self.database_outage:
            self.postgres.stop("fast")
            # The outage itself: nothing to wait for, the database is down on purpose.
            time.sleep(down_for)
            self.postgres.start()
        back = time.monotonic()
        deadline = back + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"/readyz not green 30 s after PostgreSQL came back:\n{self.logs()}"
                )
            time.sleep(0.05)  # polling a readiness probe: there is no event to wait on
        seconds = time.monotonic() - back
        self.readyz_after_postgres.append(seconds)
        return seconds

    def s3_outage(self, down_for: float) -> None:
        """SIGKILL SeaweedFS, keep it down ``down_for`` s, start it on the same data and ports."""
        self.weed.stop(kill=True)
        time.sleep(down_for)  # the outage itself
        self.weed.start()

    def kill_device_process(self, pick: int) -> int | None:
        """SIGKILL one running device agent (the ``pick``-th, modulo); returns its pid."""
        agents = sorted(self.runtime.scan(), key=lambda a: a.pid)
        if not agents:
            return None
        agent = agents[pick % len(agents)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.pid, signal.SIGKILL)
        return agent.pid

    def stripe_error(self, times: int) -> None:
        """The next ``times`` refund or payment calls to Stripe answer 500 (``api_error``)."""
        error = {"type": "api_error", "message": "soak: injected 500"}
        for path in ("/v1/refunds", "/v1/payment_intents"):
            self.stripe.answer("POST", path, 500, {"error": error}, times=times)

    def stripe_lost_answer(self, hold_for: float) -> None:
        """The next refund reaches localstripe, but its answer is held past the client timeout."""
        held = self.stripe.hold("POST", "/v1/refunds", after_forward=True)
        threading.Timer(hold_for, held.release).start()


@contextlib.contextmanager
def soak_stack(workdir: Path, workers: int = 3) -> Iterator[SoakStack]:
    """Start everything; stop everything by pid at the end, even when the start fails."""
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(private_postgres())
        url = postgres.create_database(DATABASE)
        weed = WeedServer(workdir / "weed")
        stack.callback(weed.stop, kill=True)
        weed.start()
        localstripe = LocalStripe(log_path=workdir / "localstripe.log")
        stack.callback(localstripe.stop)
        localstripe.start()
        proxy = StripeFaultProxy(localstripe.base)
        proxy.start()
        stack.callback(proxy.stop)
        env = soak_env(workdir, url, weed, proxy.base)
        api = spawn_serve(workdir, env, "--no-worker", name="api-0")
        soak = SoakStack(workdir, postgres, weed, proxy, env, api, spawned=[api])
        stack.callback(_stop_all, soak)
        api.wait_healthy(timeout=60)
        for i in range(workers):
            soak.start_worker(f"w{i}")
        yield soak


def _stop_all(soak: SoakStack) -> None:
    """SIGTERM every live child at once (they drain in parallel), then reap each by pid."""
    with soak.lock:
        soak.closed = True
    for process in soak.spawned:
        if process.alive:
            os.kill(process.pid, signal.SIGTERM)
    for process in soak.spawned:
        process.stop()
