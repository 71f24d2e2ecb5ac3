"""The engine's tables: ``saga_runs`` (state), ``saga_events`` (history), ``saga_workers``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from cloudphone.saga.state import ACTIVE, SagaStatus
from cloudphone.saga.store.types import JSONType, UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Metadata of the engine's tables; services keep their own."""

_ALL_SQL = ", ".join(f"'{s.value}'" for s in SagaStatus)

saga_runs = Table(
    "saga_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("saga_type", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("current_step", String(100)),
    Column("attempt", Integer, nullable=False),
    # The input given to start(); never changed afterwards (runs started before outputs were
    # kept per step hold their merged data here).
    Column("data", JSONType, nullable=False),
    # Step name -> that step's latest output (JSON null: it returned nothing); each progress
    # write merges in only the step it records.
    Column("outputs", JSONType, nullable=False, server_default=text("'{}'")),
    Column("error", JSONType),
    Column("compensation_cause", String(16)),
    Column("idempotency_key", String(255)),
    Column("started_by", String(200)),
    # Fencing token: every claim and operator action bumps it, every progress write checks it.
    Column("epoch", BigInteger, nullable=False),
    Column("owner", String(200)),
    Column("lease_expires_at", UtcDateTime),
    Column("next_run_at", UtcDateTime),
    Column("deadline_at", UtcDateTime),
    Column("deadline_noted", Boolean, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    # Number of events so far; each write appends after it, so seq has no gaps.
    Column("last_seq", Integer, nullable=False),
    Column("resolution", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    # W3C trace context of the start (traceparent/tracestate only), parent of the run's spans.
    Column("trace_context", JSONType),
    # The definition's version the run is pinned to; runs from before versions are version 1.
    Column("saga_version", Integer, nullable=False, server_default=text("1")),
    # The run this one was forked from (a fork's own history names it too).
    Column("forked_from", String(36)),
    # First failure of the current step or compensation: the start of its retry budget.
    Column("retry_since", UtcDateTime),
    UniqueConstraint("saga_type", "idempotency_key"),
    CheckConstraint(f"status IN ({_ALL_SQL})", name="status"),
    CheckConstraint("attempt >= 1", name="attempt"),
)

Index(
    "ix_saga_runs_due",
    saga_runs.c.next_run_at,
    postgresql_where=saga_runs.c.status.in_([s.value for s in ACTIVE]),
    sqlite_where=saga_runs.c.status.in_([s.value for s in ACTIVE]),
)
Index("ix_saga_runs_owner", saga_runs.c.owner)
Index("ix_saga_runs_status_created", saga_runs.c.status, saga_runs.c.created_at)
Index("ix_saga_runs_type_created", saga_runs.c.saga_type, saga_runs.c.created_at)
Index("ix_saga_runs_started_by", saga_runs.c.started_by, saga_runs.c.created_at)
# The console's reads (see store/stats.py): newest-first lists filtered by time alone, and the
# overview's counts and per-minute starts, answered from the index alone.
Index("ix_saga_runs_created", saga_runs.c.created_at, saga_runs.c.saga_type, saga_runs.c.status)
# Per-minute ends, failure rate and durations of finished runs (active runs are not in it).
Index(
    "ix_saga_runs_finished",
    saga_runs.c.finished_at,
    saga_runs.c.saga_type,
    saga_runs.c.status,
    saga_runs.c.created_at,
    postgresql_where=saga_runs.c.finished_at.is_not(None),
    sqlite_where=saga_runs.c.finished_at.is_not(None),
)

Index("ix_saga_runs_forked_from", saga_runs.c.forked_from)

saga_events = Table(
    "saga_events",
    metadata,
    Column(
        "saga_id",
        String(36),
        ForeignKey("saga_runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("step", String(100)),
    Column("attempt", Integer),
    Column("detail", JSONType, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

saga_workers = Table(
    "saga_workers",
    metadata,
    Column("worker_id", String(200), primary_key=True),
    # The (saga type, version) pairs it drives, as a JSON array of [name, version] arrays.
    Column("sagas", JSONType, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    # Refreshed about once per lease; a worker is live while this is within two leases.
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
)
"""The live workers and what they can drive: which runs no live worker knows (orphans)."""
