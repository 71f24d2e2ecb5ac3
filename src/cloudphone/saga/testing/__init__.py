"""The test kit for users of the engine: prove a saga's compensations without a database.

- :class:`MemoryEngine` — the :class:`~cloudphone.saga.SagaEngine` interface on an in-memory
  store, driven by a :class:`ManualClock`; ``crash_at`` simulates a worker dying at a step
  boundary and another taking over.
- :class:`FaultInjector` — make chosen attempts fail, hang, or SIGKILL a real process.
- :class:`StepEnvironment` — the :class:`~cloudphone.saga.StepContext` of one step, to unit-test
  a step function directly.

Nothing here is used by the engine itself. See "Testing your sagas" in ``docs/engine.md``.
"""

from cloudphone.saga.testing.clock import ManualClock
from cloudphone.saga.testing.faults import Boundary, Call, FaultInjector
from cloudphone.saga.testing.memory import MemoryEngine, WorkerCrashed
from cloudphone.saga.testing.steps import StepEnvironment

__all__ = [
    "Boundary",
    "Call",
    "FaultInjector",
    "ManualClock",
    "MemoryEngine",
    "StepEnvironment",
    "WorkerCrashed",
]
