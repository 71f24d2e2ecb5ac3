"""``cloudphone serve`` (HTTP API + worker) and ``cloudphone worker`` (worker only)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from cloudphone.cli._shared import load, run

if TYPE_CHECKING:
    from cloudphone.settings import Settings

log = logging.getLogger("cloudphone.cli")


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [CLOUDPHONE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port [CLOUDPHONE_PORT].")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run a saga worker here.")
    ] = True,
) -> None:
    """Serve the HTTP API, with an embedded saga worker unless --no-worker.

    On the embedded defaults this needs nothing installed: a SQLite file under ./var. The
    platform starts (migrations, deployment checks) before the port is bound, so a refusal is
    one error line and exit code 1. SIGTERM stops accepting requests and claims, lets running
    steps finish within the shutdown grace and hands unfinished runs back.
    """
    settings = load(host=host, port=port)
    run(lambda: _serve(settings, worker))


async def _serve(settings: Settings, worker: bool) -> None:
    import uvicorn

    from cloudphone.api.app import CONSOLE_PATH, create_app
    from cloudphone.cli.uvicorn_server import GracefulServer
    from cloudphone.platform import build_platform

    async with build_platform(settings, with_worker=worker) as platform:
        config = uvicorn.Config(
            create_app(platform),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            lifespan="on",
            timeout_graceful_shutdown=max(int(settings.shutdown_grace.total_seconds()), 1),
            server_header=False,
        )
        url = f"http://{settings.host}:{settings.port}"
        log.info(
            "serving",
            extra={
                "url": url,
                "console": f"{url}{CONSOLE_PATH}",
                "database": _safe_url(settings),
                "worker": worker,
            },
        )
        typer.echo(f"console: {url}{CONSOLE_PATH}")
        server = GracefulServer(config)
        await server.serve()
    if not server.started:
        raise typer.Exit(3)  # the server did not start (uvicorn logged why)


def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs driven at once [CLOUDPHONE_WORKER_CONCURRENCY].")
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option("--id", help="Stable worker id, to take runs back after a restart."),
    ] = None,
) -> None:
    """Run a saga worker only (scale out: many workers on one PostgreSQL).

    SIGTERM or Ctrl-C stops claiming, lets running steps finish within the shutdown grace and
    hands unfinished runs back; a second signal interrupts them at once.
    """
    settings = load(worker_concurrency=concurrency, worker_id=worker_id)
    run(lambda: run_worker(settings))


async def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM/SIGINT, then stop gracefully."""
    from cloudphone.platform import build_platform

    platform = build_platform(settings, with_worker=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_signal(signum: int) -> None:
        log.info(
            "stopping: no new claims; running steps get %s to finish",
            settings.shutdown_grace,
            extra={"signal": signal.Signals(signum).name},
        )
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, second_signal)

    def second_signal() -> None:
        # Like a crash: the runs' leases expire and other workers take them over.
        log.warning("second signal: exiting now without waiting for running steps")
        logging.shutdown()
        os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first_signal, sig)
    async with platform:
        log.info(
            "worker ready",
            extra={"worker_id": platform.engine.worker_id, "database": _safe_url(settings)},
        )
        await stop.wait()
    log.info("worker stopped", extra={"worker_id": platform.engine.worker_id})


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
