"""RetryPolicy: validation, exponential delays with a cap, full jitter, retryable errors."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudphone.saga import NonRetryableError, RetryPolicy, StepOutputError


def fixed(initial: float = 1.0, coefficient: float = 2.0, maximum: float = 60.0) -> RetryPolicy:
    """A policy without jitter, so delays are exact."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial),
        backoff_coefficient=coefficient,
        max_interval=timedelta(seconds=maximum),
        jitter=False,
    )


# --- validation --------------------------------------------------------------------------------


def test_defaults_match_the_design() -> None:
    """4 attempts, 1 s, x2, full jitter, nothing non-retryable by type."""
    policy = RetryPolicy()
    assert policy.max_attempts == 4
    assert policy.initial_interval == timedelta(seconds=1)
    assert policy.backoff_coefficient == 2.0
    assert policy.max_interval >= policy.initial_interval
    assert policy.jitter is True
    assert policy.non_retryable == ()


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_below_one_is_rejected_with_the_value(attempts: int) -> None:
    with pytest.raises(ValueError, match=rf"max_attempts must be at least 1, got {attempts}"):
        RetryPolicy(max_attempts=attempts)


def test_single_attempt_is_allowed() -> None:
    assert RetryPolicy(max_attempts=1).max_attempts == 1


def test_negative_initial_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="initial_interval must not be negative"):
        RetryPolicy(initial_interval=timedelta(seconds=-1))


def test_max_interval_below_initial_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_interval must be at least initial_interval"):
        RetryPolicy(initial_interval=timedelta(seconds=10), max_interval=timedelta(seconds=5))


@pytest.mark.parametrize("coefficient", [0.0, 0.5, 0.999, -2.0])
def test_backoff_coefficient_below_one_is_rejected_with_the_value(coefficient: float) -> None:
    with pytest.raises(ValueError, match=r"backoff_coefficient must be >= 1, got "):
        RetryPolicy(backoff_coefficient=coefficient)


def test_nan_backoff_coefficient_is_rejected() -> None:
    """NaN compares false with everything, so it must be refused explicitly, not at delay()."""
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=float("nan"))


@pytest.mark.parametrize("bad", ["ValueError", ValueError("x"), int, None])
def test_non_retryable_must_hold_exception_types(bad: object) -> None:
    with pytest.raises(ValueError, match=r"non_retryable holds .*, not an exception type"):
        RetryPolicy(non_retryable=(bad,))  # type: ignore[arg-type]


def test_zero_intervals_are_valid() -> None:
    """Immediate retries are allowed: both intervals may be zero."""
    policy = RetryPolicy(initial_interval=timedelta(0), max_interval=timedelta(0))
    assert policy.delay(5) == timedelta(0)


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


# --- delays --------------------------------------------------------------------------------------


def test_first_retry_waits_the_initial_interval() -> None:
    assert fixed(initial=1.5).delay(1) == timedelta(seconds=1.5)


def test_delay_grows_by_the_coefficient() -> None:
    policy = fixed(initial=1, coefficient=3, maximum=1000)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (1, 3, 9, 27)]


def test_delay_is_capped_at_max_interval() -> None:
    policy = fixed(initial=1, coefficient=2, maximum=10)
    assert [policy.delay(n).total_seconds() for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


def test_coefficient_one_keeps_the_delay_constant() -> None:
    policy = fixed(initial=2, coefficient=1, maximum=60)
    assert {policy.delay(n) for n in range(1, 20)} == {timedelta(seconds=2)}


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_numbers_below_one_wait_the_initial_interval(attempt: int) -> None:
    assert fixed(initial=1).delay(attempt) == timedelta(seconds=1)


@pytest.mark.parametrize("attempt", [1_000, 10**9, sys.maxsize, 10**100])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    """Endless post-pivot retries reach large attempt numbers; the delay stays at the cap."""
    assert fixed(initial=1, coefficient=2, maximum=60).delay(attempt) == timedelta(seconds=60)


def test_huge_attempt_with_unbounded_max_interval_does_not_overflow() -> None:
    """``max_interval=timedelta.max`` (no practical cap) still yields a valid timedelta."""
    policy = RetryPolicy(max_interval=timedelta.max, jitter=False)
    assert timedelta(0) <= policy.delay(500) <= timedelta.max


@pytest.mark.timeout(2)
@pytest.mark.parametrize(
    "policy",
    [
        fixed(initial=1, coefficient=1, maximum=60),
        fixed(initial=0, coefficient=2, maximum=60),
    ],
    ids=["constant", "zero-initial"],
)
def test_huge_attempt_numbers_are_computed_promptly(policy: RetryPolicy) -> None:
    """A delay that never reaches the cap must not cost one loop turn per past attempt."""
    assert policy.delay(10**15) <= policy.max_interval


# --- jitter --------------------------------------------------------------------------------------


def test_full_jitter_scales_the_delay_by_rand() -> None:
    policy = RetryPolicy(initial_interval=timedelta(seconds=4), jitter=True)
    assert policy.delay(1, rand=lambda: 0.25) == timedelta(seconds=1)
    assert policy.delay(2, rand=lambda: 0.5) == timedelta(seconds=4)


def test_full_jitter_can_retry_at_once() -> None:
    assert RetryPolicy(jitter=True).delay(3, rand=lambda: 0.0) == timedelta(0)


def test_full_jitter_never_exceeds_the_capped_delay() -> None:
    policy = RetryPolicy(max_interval=timedelta(seconds=10), jitter=True)
    assert policy.delay(50, rand=lambda: 0.999_999) <= timedelta(seconds=10)


def test_without_jitter_rand_is_not_consulted() -> None:
    def boom() -> float:
        raise AssertionError("rand called without jitter")

    assert fixed(initial=1).delay(2, rand=boom) == timedelta(seconds=2)


@given(
    initial=st.floats(min_value=0, max_value=3600),
    extra=st.floats(min_value=0, max_value=86_400),
    coefficient=st.floats(min_value=1, max_value=10),
    attempt=st.integers(min_value=-5, max_value=300),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_bounds_property(
    initial: float, extra: float, coefficient: float, attempt: int, r: float
) -> None:
    """Without jitter the delay is min(initial * coef^(n-1), max); jitter stays in [0, that]."""
    plain = RetryPolicy(
        initial_interval=timedelta(seconds=initial),
        max_interval=timedelta(seconds=initial + extra),
        backoff_coefficient=coefficient,
        jitter=False,
    )
    ceiling = plain.max_interval.total_seconds()
    start = plain.initial_interval.total_seconds()
    expected = min(start * coefficient ** max(attempt - 1, 0), ceiling)

    computed = plain.delay(attempt)
    assert computed.total_seconds() == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert plain.initial_interval <= computed <= plain.max_interval
    assert computed <= plain.delay(attempt + 1)

    jittered = RetryPolicy(
        initial_interval=plain.initial_interval,
        max_interval=plain.max_interval,
        backoff_coefficient=coefficient,
        jitter=True,
    ).delay(attempt, rand=lambda: r)
    assert timedelta(0) <= jittered <= computed


# --- retryable errors ----------------------------------------------------------------------------


class ProviderDown(Exception):
    pass


class CardDeclined(Exception):
    pass


class ExpiredCard(CardDeclined):
    pass


def test_ordinary_errors_are_retryable() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(ProviderDown("502"))
    assert policy.is_retryable(TimeoutError())


def test_non_retryable_error_is_never_retried() -> None:
    assert not RetryPolicy().is_retryable(NonRetryableError("bad input"))


def test_subclasses_of_non_retryable_error_are_never_retried() -> None:
    assert not RetryPolicy().is_retryable(StepOutputError("not a dict"))


def test_types_listed_in_the_policy_are_not_retried() -> None:
    policy = RetryPolicy(non_retryable=(CardDeclined, KeyError))
    assert not policy.is_retryable(CardDeclined())
    assert not policy.is_retryable(KeyError("k"))
    assert policy.is_retryable(ProviderDown())


def test_subclasses_of_listed_types_are_not_retried() -> None:
    assert not RetryPolicy(non_retryable=(CardDeclined,)).is_retryable(ExpiredCard())


def test_non_retryable_error_wins_even_when_not_listed() -> None:
    policy = RetryPolicy(non_retryable=(CardDeclined,))
    assert not policy.is_retryable(NonRetryableError())


# --- budget ------------------------------------------------------------------------------------


def test_the_default_budget_is_a_day() -> None:
    assert RetryPolicy().budget == timedelta(hours=24)


@pytest.mark.parametrize("budget", [timedelta(0), timedelta(seconds=-1)])
def test_a_budget_must_be_positive(budget: timedelta) -> None:
    with pytest.raises(ValueError, match="budget must be positive"):
        RetryPolicy(budget=budget)


def test_the_budget_is_spent_once_the_step_has_failed_that_long() -> None:
    since = datetime(2030, 1, 1, tzinfo=UTC)
    policy = RetryPolicy(budget=timedelta(hours=1))
    assert not policy.budget_spent(since, since + timedelta(minutes=59, seconds=59))
    assert policy.budget_spent(since, since + timedelta(hours=1))
    assert not RetryPolicy(budget=None).budget_spent(since, since + timedelta(days=365))
