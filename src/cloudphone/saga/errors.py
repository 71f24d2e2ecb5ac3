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
    """``start()`` was given data that is not a JSON object, or a bad idempotency key."""


class UnknownSagaTypeError(SagaError, LookupError):
    """No saga with that name is registered with the engine."""


class SagaNotFoundError(SagaError, LookupError):
    """No saga run has that id."""


class OperatorActionError(SagaError):
    """An operator action (retry, cancel, resolve) is not allowed in the run's current state."""


class InvalidTransitionError(SagaError):
    """A status change that the state machine does not allow."""


class StepOutputError(NonRetryableError):
    """A step returned something that is not a JSON object; retrying would return it again."""


class LeaseLostError(SagaError):
    """This worker no longer owns the run: another worker took it over or an operator acted.

    Internal: the runner stops driving the run and discards the uncommitted progress.
    """
