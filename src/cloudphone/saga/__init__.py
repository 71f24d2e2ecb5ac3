"""The durable saga engine.

Define a :class:`Saga` with ordered steps (compensatable, one pivot, retriable), start runs
with :meth:`SagaEngine.start`, and run a worker to drive them. Progress, leases and history
live in SQLite or PostgreSQL (or any :class:`SagaStore`); see ``DESIGN.md`` §1-2 for the
semantics. :mod:`cloudphone.saga.testing` is the test kit: an in-memory engine, a manual clock,
fault injection and crashes.
"""

from cloudphone.saga.context import StepContext, current_step
from cloudphone.saga.definition import Saga, Step, StepHandle, StepKind
from cloudphone.saga.engine import SagaEngine
from cloudphone.saga.errors import (
    DatabaseUnavailableError,
    InvalidSagaInputError,
    InvalidTransitionError,
    MissingOutputError,
    NestedWriteError,
    NonRetryableError,
    OperatorActionError,
    RetryLater,
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    StepOutputError,
    UnknownSagaTypeError,
)
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.records import ErrorInfo, EventKind, SagaEvent, SagaRun, StartedRun
from cloudphone.saga.retry import RetryPolicy
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.base import SagaStore
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.disconnects import is_database_unavailable
from cloudphone.saga.tracing import SagaTracer

__all__ = [
    "Database",
    "DatabaseUnavailableError",
    "ErrorInfo",
    "EventKind",
    "InvalidSagaInputError",
    "InvalidTransitionError",
    "MissingOutputError",
    "NestedWriteError",
    "NonRetryableError",
    "OperatorActionError",
    "RetryLater",
    "RetryPolicy",
    "Saga",
    "SagaDefinitionError",
    "SagaEngine",
    "SagaError",
    "SagaEvent",
    "SagaMetrics",
    "SagaNotFoundError",
    "SagaRun",
    "SagaStatus",
    "SagaStore",
    "SagaTracer",
    "StartedRun",
    "Step",
    "StepContext",
    "StepHandle",
    "StepKind",
    "StepOutputError",
    "UnknownSagaTypeError",
    "current_step",
    "is_database_unavailable",
]
