"""One mixed chaos soak over the whole platform: ``python -m tests.chaos.soak``.

Starts the real stack (:mod:`tests.support.soak_stack`: a private PostgreSQL, SeaweedFS,
localstripe behind a fault proxy, ``cloudphone serve --no-worker`` and 3 ``cloudphone worker``
processes with the local device runtime), sends the seeded load of several users over HTTP
(:mod:`tests.chaos.soak_load`) while a seeded schedule of faults hits it: workers and the API
SIGKILLed (the killed process, and only it, is started again), PostgreSQL restarted, SeaweedFS
killed and restarted, device processes killed, Stripe errors and answers lost after the refund,
the sandbox provider's fault rates. Then it waits (with a deadline) for everything to settle,
checks the invariants (:mod:`tests.chaos.soak_checks`), prints a summary table and saves it as
JSON. Exit status 0 when every invariant holds.

    python -m tests.chaos.soak                     # the CI profile (also tests/chaos/test_soak.py)
    python -m tests.chaos.soak --profile long --seed 7 --json var/soak-long.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.soak_checks import Check, observed, run_checks, unsettled
from tests.chaos.soak_client import Client
from tests.chaos.soak_install_checks import DURING_INSTALL, install_checks, installing_worker
from tests.chaos.soak_load import run_load
from tests.chaos.soak_plan import PROFILES, Fault, Plan, Profile, plan
from tests.support.soak_stack import SoakStack, soak_stack

DEFAULT_SEED = 14


@dataclass
class Report:
    """Everything one soak measured."""

    profile: str
    seed: int
    started_at: str
    seconds: dict[str, float] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    sagas: dict[str, dict[str, int]] = field(default_factory=dict)
    observed: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    min_sagas: int = 0

    @property
    def total_sagas(self) -> int:
        """Saga runs of every type."""
        return sum(sum(by_status.values()) for by_status in self.sagas.values())

    @property
    def failures(self) -> list[Check]:
        """Checks that do not hold."""
        return [check for check in self.checks if not check.ok]

    @property
    def ok(self) -> bool:
        """Whether every invariant held."""
        return bool(self.checks) and not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        body = asdict(self)
        body.update(total_sagas=self.total_sagas, ok=self.ok)
        return body

    def table(self) -> str:
        """The summary, as printed."""
        lines = [
            f"chaos soak: profile {self.profile}, seed {self.seed}, {self.started_at}",
            "  " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
            f"  faults: {_fault_summary(self.faults)}",
            f"  sagas: {self.total_sagas} — "
            + "; ".join(
                f"{t} " + " ".join(f"{s}={n}" for s, n in by.items())
                for t, by in self.sagas.items()
            ),
            f"  clients: {_client_summary(self.clients)}",
            *(
                f"  {name}: "
                + "; ".join(
                    (f"{group} " if group != "all" else "")
                    + " ".join(f"{k}={n}" for k, n in by.items())
                    for group, by in groups.items()
                )
                for name, groups in self.observed.items()
                if name != "saga runs"
            ),
            "",
            f"  {'check':<78} {'value':>16}  {'expected':>14}  ok",
        ]
        for check in self.checks:
            mark = "yes" if check.ok else "NO"
            lines.append(f"  {check.name:<78} {check.value!s:>16}  {check.expected:>14}  {mark}")
            if not check.ok and check.detail:
                lines.append(f"      {check.detail[:300]}")
        lines.append(f"\n  {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _fault_summary(faults: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for fault in faults:
        counts[fault["kind"]] = counts.get(fault["kind"], 0) + 1
    return ", ".join(f"{kind} x{n}" for kind, n in counts.items())


def _client_summary(clients: dict[str, Any]) -> str:
    keys = ("unavailable_retried", "connection_errors_retried", "idempotent_replays")
    shown = ", ".join(f"{key} {clients.get(key, 0)}" for key in keys)
    seen = "".join(f"; {what} {n}" for what, n in clients.get("seen", {}).items())
    return f"{shown}, unexpected answers {len(clients.get('unexpected', []))}{seen}"


LANES = {"restart_postgres": "outages", "kill_api": "outages", "s3_outage": "outages",
         "kill_worker": "workers"}  # fmt: skip
"""Faults of one lane run one after the other; the lanes (and the rest) run side by side."""


async def inject(
    stack: SoakStack, schedule: Plan, started: float, log: list[dict[str, Any]]
) -> None:
    """Run each fault at its moment; within a lane one after the other (a killed one back first)."""
    lanes: dict[str, list[Fault]] = {}
    for fault in schedule.faults:
        lanes.setdefault(LANES.get(fault.kind, "light"), []).append(fault)
    workers = sorted(stack.workers)
    await asyncio.gather(
        *(_lane(stack, faults, workers, started, log) for faults in lanes.values())
    )


async def _lane(
    stack: SoakStack,
    faults: list[Fault],
    workers: list[str],
    started: float,
    log: list[dict[str, Any]],
) -> None:
    loop = asyncio.get_running_loop()
    for fault in faults:
        # The seeded fault schedule: this fault's moment of the window.
        await asyncio.sleep(max(0.0, started + fault.at - loop.time()))
        begun = loop.time()
        try:
            detail = await asyncio.to_thread(_apply, stack, fault, workers)
        except Exception as error:  # a process that did not come back: a finding, not a crash
            detail = f"FAILED: {error!r}"[:2000]
        log.append(
            {"kind": fault.kind, "at": round(begun - started, 2),
             "took": round(loop.time() - begun, 2), "detail": detail}
        )  # fmt: skip


def _apply(stack: SoakStack, fault: Fault, workers: list[str]) -> str:
    """One fault, blocking (run in a thread)."""
    if fault.kind == "kill_worker":
        # A kill waits (2.5 s at most) for a worker in the middle of an install, and hits it.
        installing = installing_worker(stack, within=2.5)
        name, during = installing or (workers[fault.pick % len(workers)], "")
        pid = stack.workers[name].pid
        stack.kill_worker(name)
        return f"{name} pid {pid} -> {stack.workers[name].pid}{during}"
    if fault.kind == "kill_api":
        pid = stack.api.pid
        stack.kill_api()
        return f"pid {pid} -> {stack.api.pid}"
    if fault.kind == "restart_postgres":
        return f"/readyz green {stack.restart_postgres(down_for=2.0):.2f}s after the start"
    if fault.kind == "s3_outage":
        stack.s3_outage(down_for=3.0)
        return "down 3s"
    if fault.kind == "kill_device":
        return f"agent pid {stack.kill_device_process(fault.pick)}"
    if fault.kind == "stripe_error":
        stack.stripe_error(times=2)
        return "next 2 refund and payment calls answer 500"
    if fault.kind == "stripe_lost_answer":
        stack.stripe_lost_answer(hold_for=3.0)
        return "next refund's answer held 3s (past the client timeout)"
    raise ValueError(f"unknown fault {fault.kind}")


async def drain(stack: SoakStack, within: float) -> dict[str, int]:
    """Wait until no saga is active, no device in flux and no payment PENDING (or the deadline)."""
    deadline = time.monotonic() + within
    while True:
        left = await asyncio.to_thread(unsettled, stack)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)  # polling the database: the drain has no event to wait on


async def soak(profile: Profile, seed: int, workdir: Path) -> Report:
    """Start the stack, load it under faults, drain, check; everything is stopped at the end."""
    report = Report(profile.name, seed, datetime.now(UTC).isoformat(timespec="seconds"))
    report.min_sagas = profile.min_sagas
    schedule = plan(profile, seed)
    t0 = time.monotonic()
    with soak_stack(workdir) as stack:
        report.seconds["start"] = time.monotonic() - t0
        t1 = time.monotonic()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            client = Client(http)
            loop = asyncio.get_running_loop()
            started = loop.time()
            faults = asyncio.create_task(inject(stack, schedule, started, report.faults))
            try:
                await run_load(client, schedule, started)
                await faults
            finally:
                faults.cancel()
        report.seconds["load"] = time.monotonic() - t1
        t2 = time.monotonic()
        left = await drain(stack, profile.drain)
        report.seconds["drain"] = time.monotonic() - t2
        report.clients = client.tally.as_dict()
        report.observed = await asyncio.to_thread(observed, stack)
        report.sagas = report.observed["saga runs"]
        report.checks = await asyncio.to_thread(run_checks, stack)
        report.checks += await asyncio.to_thread(install_checks, stack)
        report.checks[:0] = [
            Check(
                "active sagas / devices in flux / payments PENDING after the drain",
                " / ".join(map(str, left.values())), "0 / 0 / 0", not any(left.values()),
            ),
            Check("saga runs", report.total_sagas, f">= {profile.min_sagas}",
                  report.total_sagas >= profile.min_sagas),
            Check("unexpected HTTP answers", len(client.tally.unexpected), "0",
                  not client.tally.unexpected, "; ".join(client.tally.unexpected[:5])),
            _fault_floor(report.faults, profile),
            _kills_during_installs(report.faults, profile),
        ]  # fmt: skip
    report.seconds["total"] = time.monotonic() - t0
    return report


def _fault_floor(done: list[dict[str, Any]], profile: Profile) -> Check:
    """Every planned fault ran, and each killed or stopped process came back."""
    counts = {kind: sum(f["kind"] == kind for f in done) for kind in profile.faults}
    short = {kind: n for kind, n in counts.items() if n < profile.faults[kind]}
    failed = [f"{f['kind']} at {f['at']}s: {f['detail']}" for f in done if "FAILED" in f["detail"]]
    return Check("faults injected as planned (and recovered from)", sum(counts.values()),
                 str(sum(profile.faults.values())), not short and not failed,
                 f"missing {short}; " + "; ".join(failed))  # fmt: skip


def _kills_during_installs(done: list[dict[str, Any]], profile: Profile) -> Check:
    """A worker SIGKILL landed while that worker ran an install (if installs and 4+ kills)."""
    landed = sum(DURING_INSTALL in f["detail"] for f in done if f["kind"] == "kill_worker")
    planned = profile.operations.get("install", 0) and profile.faults.get("kill_worker", 0) >= 4
    wanted = 1 if planned else 0
    return Check("worker kills while that worker ran an install or uninstall", landed,
                 f">= {wanted}", landed >= wanted)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: run one soak, print the table, save the JSON; exit 1 if a check fails."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--json", type=Path, help="Where to save the report (default: printed path)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cloudphone-soak-"))
    try:
        report = asyncio.run(soak(PROFILES[args.profile], args.seed, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.table())
    target = args.json or Path(tempfile.gettempdir()) / f"cloudphone-soak-{args.profile}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.as_dict(), indent=2, default=str))
    print(f"  report: {target}" + (f", logs: {workdir}" if args.keep else ""))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
