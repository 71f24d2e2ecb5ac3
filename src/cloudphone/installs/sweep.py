"""The install spool's sweeper: files no run will read again go, at worker start and periodically.

Steps remove their own spool files (PUSH_AND_INSTALL once it installed, FETCH_APK's
compensation), but some outlive their run: a run that ended FAILED before its compensations
reached FETCH_APK, or a run whose worker died between steps and that a worker on another host
finished (it fetched a file of its own there). The sweeper removes a file of the spool when

1. nothing has written to it for ``grace`` (default 10 minutes): a file a fetch is writing
   now, or one whose run is not committed yet, is never touched; and
2. its run does not need it any more: there is no ``app_install`` run of that id, or the run
   is no longer active — COMPLETED, COMPENSATED, TIMED_OUT or FAILED (resolved or not).
   PENDING, RUNNING and COMPENSATING runs keep their files, whichever host drives them.

Both the whole file ``<run>.apk`` and a fetch's partial files ``.<run>.apk.*.part`` go by this
rule; other names, directories and symbolic links are never touched (:meth:`ApkSpool.idle_files`).

**Why a FAILED run's file may go**, though an operator may still act on the run. Every way on
from FAILED either never reads the file or fetches it again when it is missing:

* ``retry`` of a run that failed going forward resumes at its failed step: PUSH_AND_INSTALL
  first asks :meth:`ApkSpool.holds` and fetches again when the file is not there (as after a
  takeover by another host); RECORD_INSTALLED never reads it.
* ``retry`` of a run that failed compensating resumes the compensations: PUSH_AND_INSTALL's
  talks to the device only, FETCH_APK's removes the file anyway, RESERVE_INSTALLATION's is a
  database write. ``retry --forward`` resumes forward at the step whose compensation failed:
  PUSH_AND_INSTALL as above, FETCH_APK fetches anyway, RESERVE_INSTALLATION is followed by
  FETCH_APK.
* ``resolve`` ends the run; a ``fork`` is a new run with a new id, hence a file of its own.

So removing it costs at most one more fetch if an operator retries, while keeping it would hold
up to an APK's size (2 GiB by default) per FAILED run for as long as nobody acts. A later
version of ``app_install`` must keep this property: a step that reads the file fetches it when
``holds()`` is false. An operator retry that lands in the milliseconds between a sweep's read of
the run and its removal of the file costs one attempt: the push does not find the file, fails
like any transient error, and the next attempt fetches again.

Each removal counts in ``install_spool_files_removed_total{reason}`` (``finished``: the run is
over; ``unknown``: no such run) and each sweep that removed something logs one line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter

from cloudphone.installs.install import APP_INSTALL
from cloudphone.installs.spool import ApkSpool, IdleFile
from cloudphone.periodic import Periodic
from cloudphone.saga import SagaEngine

log = logging.getLogger("cloudphone.installs")

DEFAULT_GRACE = timedelta(minutes=10)
"""How long a spool file must have been left untouched before a sweep may remove it."""
DEFAULT_INTERVAL = timedelta(minutes=5)
"""Time between two sweeps after the one at start."""
FINISHED = "finished"
"""Reason label: the file's run is over (COMPLETED, COMPENSATED, TIMED_OUT or FAILED)."""
UNKNOWN = "unknown"
"""Reason label: there is no ``app_install`` run of the file's id."""
_BATCH = 1000  # the most ids one engine.list() call takes


class SpoolSweeper:
    """Removes the install spool's files that no run needs any more (see the module's rule).

    Args:
        engine: The saga engine (whose runs the files are named after).
        spool: This worker's install spool.
        grace: Files modified more recently than this are kept.
        interval: Time between sweeps after the one at :meth:`start`; zero sweeps at start
            only.
        registry: Where the removal counter is registered (the platform's); a fresh one by
            default.
        saga_type: The saga type that writes the spool.
    """

    def __init__(
        self,
        engine: SagaEngine,
        spool: ApkSpool,
        *,
        grace: timedelta = DEFAULT_GRACE,
        interval: timedelta = DEFAULT_INTERVAL,
        registry: CollectorRegistry | None = None,
        saga_type: str = APP_INSTALL,
    ) -> None:
        if grace <= timedelta(0):
            raise ValueError(f"the spool sweep grace must be positive, not {grace}")
        self.engine = engine
        self.spool = spool
        self.grace = grace
        self.saga_type = saga_type
        self.files_removed = Counter(
            "install_spool_files_removed_total",
            "Install spool files removed by the sweeper because no run needs them any more.",
            ["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        for reason in (FINISHED, UNKNOWN):
            self.files_removed.labels(reason)  # both series exist (at 0) before a removal
        self._periodic = Periodic("installs-spool-sweep", self.sweep, interval, delay_first=True)

    @property
    def running(self) -> bool:
        """Whether the periodic sweep is running."""
        return self._periodic.running

    async def sweep(self) -> list[IdleFile]:
        """Remove the idle files of finished or unknown runs once; returns the files removed."""
        idle = await asyncio.to_thread(self.spool.idle_files, self.grace)
        if not idle:
            return []
        runs = await self._runs({file.saga_id for file in idle})
        doomed = [file for file in idle if not runs.get(file.saga_id, False)]
        removed = await asyncio.to_thread(self.spool.remove_idle, doomed, self.grace)
        if removed:
            self._report(removed, runs.keys())
        return removed

    async def start(self) -> None:
        """Platform start-up hook: sweep now, then every ``interval`` in the background."""
        try:
            await self.sweep()
        except Exception:  # housekeeping of the spool must never keep a worker from starting
            log.exception("sweeping the install spool at start failed")
        self._periodic.start()

    async def stop(self) -> None:
        """Platform shut-down hook: stop the periodic sweep."""
        await self._periodic.stop()

    async def _runs(self, saga_ids: Collection[str]) -> dict[str, bool]:
        """Whether each existing run of ``saga_ids`` is active (missing ids: no such run)."""
        ordered = sorted(saga_ids)
        found: dict[str, bool] = {}
        for start in range(0, len(ordered), _BATCH):
            batch = ordered[start : start + _BATCH]
            runs = await self.engine.list(ids=batch, saga_type=self.saga_type, limit=len(batch))
            found.update((run.id, run.status.is_active) for run in runs)
        return found

    def _report(self, removed: list[IdleFile], known: Collection[str]) -> None:
        counts = {FINISHED: 0, UNKNOWN: 0}
        for file in removed:
            counts[FINISHED if file.saga_id in known else UNKNOWN] += 1
        for reason, count in counts.items():
            if count:
                self.files_removed.labels(reason).inc(count)
        log.info(
            "removed %d install spool files no run needs any more",
            len(removed),
            extra={
                "files": len(removed),
                "bytes": sum(file.size for file in removed),
                "finished": counts[FINISHED],
                "unknown": counts[UNKNOWN],
                "saga_ids": sorted({file.saga_id for file in removed})[:20],
            },
        )
