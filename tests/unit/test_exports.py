"""The public surface of cloudphone.saga is locked: changing it must be a deliberate edit."""

from __future__ import annotations

import importlib

import cloudphone.saga
import cloudphone.saga.testing

EXPECTED = [
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


def test_all_is_exactly_the_locked_list() -> None:
    assert cloudphone.saga.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    assert sorted(set(cloudphone.saga.__all__)) == cloudphone.saga.__all__


def test_every_exported_name_is_importable() -> None:
    module = importlib.import_module("cloudphone.saga")
    for name in EXPECTED:
        obj = getattr(module, name)
        assert obj is not None, name
        assert obj.__module__.startswith("cloudphone.saga."), (name, obj.__module__)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from cloudphone.saga import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED


def test_every_public_error_is_a_saga_error() -> None:
    """SagaError is documented as the base of every error the engine raises on purpose."""
    errors = [getattr(cloudphone.saga, n) for n in EXPECTED]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    # Raised by step code to steer the engine, not by the engine itself.
    step_raised = (cloudphone.saga.NonRetryableError, cloudphone.saga.RetryLater)
    offenders = [
        e.__name__ for e in errors if not issubclass(e, (cloudphone.saga.SagaError, *step_raised))
    ]
    assert offenders == []


TESTING = [
    "Boundary",
    "Call",
    "FaultInjector",
    "ManualClock",
    "MemoryEngine",
    "StepEnvironment",
    "WorkerCrashed",
]


def test_the_test_kit_exports_exactly_the_locked_list() -> None:
    assert cloudphone.saga.testing.__all__ == TESTING
    for name in TESTING:
        assert getattr(cloudphone.saga.testing, name) is not None, name
