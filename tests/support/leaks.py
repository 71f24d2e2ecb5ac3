"""Runs a test leaves active on a shared PostgreSQL database.

Tests share the session's PostgreSQL databases, so a run one test leaves PENDING, RUNNING or
COMPENSATING is claimed by the next test that starts a worker there: its steps then act on
that test's runtime, store or provider (an extra container, object or refund). After each test
that used a shared database, ``check_shared`` finds the runs still active there and retires
them (FAILED and resolved, epoch bumped so a worker still holding one cannot write to it); the
test fails, naming them, if any is of a saga type another test's worker may have (a type
without the test's ``unique`` suffix, unless the test is marked ``leaves_runs(why)``: rows no
worker can claim, such as orphans of a version nobody registers). Fixtures that own a worker
``drain`` before they stop it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import errors
from sqlalchemy.engine import make_url

from cloudphone.saga import SagaEngine
from cloudphone.saga.state import ACTIVE

_ACTIVE = [s.value for s in ACTIVE]

SHARED_DATABASE_FIXTURES = ("postgres_url", "migrated_postgres_url")
"""Session fixtures whose database every test of the session may use."""


@dataclass(frozen=True)
class LeftRun:
    """A run still active after its test."""

    id: str
    saga_type: str
    status: str
    current_step: str | None
    owner: str | None

    def __str__(self) -> str:
        owner = f" owned by {self.owner}" if self.owner else ""
        return f"{self.saga_type} {self.id} {self.status} at {self.current_step}{owner}"


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(libpq, autocommit=True)


def retire(url: str, left: list[LeftRun], why: str) -> None:
    """Close the runs (FAILED, resolved with ``why``) unless they have finished since."""
    with _connect(url) as conn:
        conn.execute(
            "UPDATE saga_runs SET status = 'FAILED', resolution = %s, owner = NULL,"
            " lease_expires_at = NULL, next_run_at = NULL, epoch = epoch + 1,"
            " finished_at = now(), updated_at = now()"
            " WHERE id = ANY(%s) AND status = ANY(%s)",
            (why, [run.id for run in left], _ACTIVE),
        )


def active_runs(url: str) -> list[LeftRun]:
    """Runs still PENDING, RUNNING or COMPENSATING on ``url`` (none before the schema exists)."""
    with _connect(url) as conn:
        try:
            rows = conn.execute(
                "SELECT id, saga_type, status, current_step, owner FROM saga_runs"
                " WHERE status = ANY(%s) ORDER BY created_at",
                (_ACTIVE,),
            ).fetchall()
        except errors.UndefinedTable:
            return []
    return [LeftRun(str(r[0]), str(r[1]), str(r[2]), _opt(r[3]), _opt(r[4])) for r in rows]


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def check_shared(url: str, test: str, unique: str) -> list[LeftRun]:
    """Retire every run left active on ``url``; those another test's worker could claim.

    A run whose saga type carries the test's ``unique`` suffix is its own: no other test
    registers that type, so it is retired quietly. Any other (``demo``, ``device_create``…)
    would be claimed by the next worker with the type: the test must drive it to its end.
    """
    left = active_runs(url)
    if left:
        retire(url, left, f"left active by {test}; retired by the test suite")
    return [run for run in left if unique not in run.saga_type]


async def drain(engine: SagaEngine, seconds: float = 20.0) -> None:
    """Wait (its worker still running) until the active runs ``engine`` can drive have ended.

    Runs of a (type, version) it does not register are not waited for; runs still going at
    the deadline are left to the leak check, which names them.
    """
    deadline = time.monotonic() + seconds
    for status in ACTIVE:
        for run in await engine.list(status=status, limit=1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if (run.saga_type, run.saga_version) in engine.registry:
                with contextlib.suppress(TimeoutError):
                    await engine.wait(run.id, timeout=timedelta(seconds=remaining))
