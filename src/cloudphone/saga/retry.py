"""Retry policies: how often and how soon a failed attempt is tried again."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cloudphone.saga.errors import NonRetryableError


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed step attempt is retried.

    Delays grow exponentially from ``initial_interval`` by ``backoff_coefficient`` up to
    ``max_interval``; with ``jitter`` the actual delay is drawn uniformly from zero to that value
    ("full jitter"), which spreads retries of many sagas that failed together.
    """

    max_attempts: int = 4
    """Attempts in all, the first included (4 = 1 + 3 retries). Steps after the pivot and
    compensations ignore it: they retry until they succeed, fail non-retryably, or run out of
    ``budget``."""

    initial_interval: timedelta = timedelta(seconds=1)
    """Delay before the first retry (before jitter)."""

    backoff_coefficient: float = 2.0
    """Factor by which the delay grows after each failed attempt."""

    max_interval: timedelta = timedelta(seconds=60)
    """Upper bound of any single delay; also the cap for post-pivot and compensation retries."""

    jitter: bool = True
    """Draw each delay uniformly from ``[0, computed delay]``."""

    non_retryable: tuple[type[BaseException], ...] = field(default=())
    """Exception types that fail the attempt for good, like :class:`NonRetryableError`."""

    budget: timedelta | None = timedelta(hours=24)
    """How long a step after the pivot, or a compensation, may keep failing, measured from
    its first failed attempt. A failure past it leaves the run FAILED for an operator (it
    needs attention and can be retried). None: retry until it succeeds. Steps before the
    pivot are bounded by ``max_attempts`` instead."""

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_interval < timedelta(0):
            raise ValueError("initial_interval must not be negative")
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must be at least initial_interval")
        if not math.isfinite(self.backoff_coefficient) or self.backoff_coefficient < 1:
            raise ValueError(f"backoff_coefficient must be >= 1, got {self.backoff_coefficient}")
        if self.budget is not None and self.budget <= timedelta(0):
            raise ValueError(f"budget must be positive (or None for no limit), got {self.budget}")
        for exc_type in self.non_retryable:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise ValueError(f"non_retryable holds {exc_type!r}, not an exception type")

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried under this policy.

        Everything may, except :class:`NonRetryableError` (and its subclasses, such as
        :class:`~cloudphone.saga.StepOutputError`) and the types in ``non_retryable``.
        """
        if isinstance(error, NonRetryableError):
            return False
        return not isinstance(error, self.non_retryable)

    def delay(self, failed_attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        """Delay before the attempt that follows ``failed_attempt`` (1-based).

        Args:
            failed_attempt: Number of the attempt that just failed; the first is 1.
            rand: Source of uniform numbers in ``[0, 1)``, replaceable for tests.
        """
        exponent = max(failed_attempt - 1, 0)
        initial = self.initial_interval.total_seconds()
        ceiling = self.max_interval.total_seconds()
        factor = rand() if self.jitter else 1.0
        if initial <= 0:
            return timedelta(0)
        if self.backoff_coefficient > 1 and ceiling > initial:
            # Compare exponents, not delays: a huge attempt number stays cheap and cannot overflow.
            reaches_cap = exponent >= math.log(ceiling / initial, self.backoff_coefficient)
        else:
            reaches_cap = ceiling <= initial
        if reaches_cap:
            return self.max_interval * factor
        return timedelta(seconds=initial * self.backoff_coefficient**exponent * factor)

    def budget_spent(self, failing_since: datetime, now: datetime) -> bool:
        """Whether a step failing since ``failing_since`` has run out of its budget at ``now``."""
        return self.budget is not None and now - failing_since >= self.budget
