"""Errors raised by the saga engine and by step code that talks to it."""

from __future__ import annotations

from datetime import timedelta


class SagaError(Exception):
    """Base class of every error the engine raises on purpose."""


class NonRetryableError(Exception):
    """Raised by a step to say that retrying cannot help.

    The engine skips the remaining attempts: before the pivot the saga compensates, after it
    (or inside a compensation) the saga goes FAILED for an operator.
    """


class RetryLater(Exception):
    """Raised by a step to be run again later without counting as a failed attempt.

    Use it to poll durably (a provider answered "processing"): the wait is stored as the run's
    ``next_run_at``, the attempt number stays the same, and ``max_attempts`` is not consumed.
    Before the pivot the saga deadline still applies.

    Args:
        reason: Why the step waits (shown in the history).
        delay: How long to wait; None uses the step's retry backoff.
    """

    def __init__(self, reason: str, delay: timedelta | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class SagaDefinitionError(SagaError, ValueError):
    """A saga or step definition is invalid; raised at definition (import) time."""


class InvalidSagaInputError(SagaError, ValueError):
    """``start()`` was given input that does not fit the saga, or a bad idempotency key.

    Input that is not a JSON object, or (for a saga with an input type) that does not
    validate into it; ``errors`` then holds pydantic's reasons (``loc``, ``msg``, ``type``).
    """

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class UnknownSagaTypeError(SagaError, LookupError):
    """No saga with that name is registered with the engine."""


class SagaNotFoundError(SagaError, LookupError):
    """No saga run has that id."""


class OperatorActionError(SagaError):
    """An operator action (retry, cancel, resolve) is not allowed in the run's current state."""


class InvalidTransitionError(SagaError):
    """A status change that the state machine does not allow."""


class StepOutputError(NonRetryableError):
    """A step's output cannot be kept; retrying would return it again.

    It is not a JSON object (or a pydantic model or dataclass), it sets a key that the saga
    input or another step's output already has, or it does not fit the type it is read as
    (``ctx.output(step, Type)``).
    """


class MissingOutputError(NonRetryableError, LookupError):
    """``ctx.output(step)`` of a step that has not run, returned nothing, or does not exist."""


class LeaseLostError(SagaError):
    """This worker no longer owns the run: another worker took it over or an operator acted.

    Internal: the runner stops driving the run and discards the uncommitted progress.
    """


class DatabaseUnavailableError(SagaError):
    """The database could not be reached, or it dropped the connection mid-statement.

    Raised for refused or reset connections, a server shutting down or starting up, an
    exhausted connection pool, and on SQLite a write lock that another process held past the
    busy timeout. A write in flight when it was raised may or may not have
    committed. The engine's own writes recover from it by themselves (retried with backoff,
    fenced so they apply at most once); a caller of ``start()`` may retry (with the same
    ``idempotency_key`` to be safe). The API answers it with 503 and ``Retry-After``.
    """


class StaleStateError(SagaError):
    """A progress write the runner believed lost did commit, so its copy of the run is stale.

    Internal: the runner reloads the run (it still holds the lease) and goes on from what is
    stored.
    """


class StepGroupAborted(BaseException):
    """The transaction this step shared with other runs' steps cannot commit it.

    Internal: one of them failed (or this step opened a write transaction of its own, which
    could wait for a lock another member holds), so the shared transaction rolled back and
    the runner runs the same attempt again in a transaction of its own (see
    :mod:`cloudphone.saga.store.step_group`). A BaseException, so that a step's ``except
    Exception`` cannot swallow it.
    """


class QueuedWriteError(SagaError):
    """A statement a step queued with ``ctx.write`` failed (``error``, without its SQL).

    Internal: it carries the failure through the store's commit, which the runner then
    handles as the attempt's failure, as if the body had raised ``error``.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(f"a queued write failed: {type(error).__name__}")
        self.error = error


class NestedWriteError(NonRetryableError, SagaError, RuntimeError):
    """A second write transaction on SQLite while this task holds one (it would wait forever).

    SQLite has one writer: a transactional step holds the write lock until it commits, so a
    write through another transaction from inside it (``engine.start()`` without
    ``session=``, an operator action, a service call that opens its own transaction) would
    wait for the step, which waits for it. Write through the open transaction instead
    (``session=ctx.session``). Retrying cannot help, so a step that raises it is not retried.
    """
