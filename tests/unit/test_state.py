"""The saga state machine: every allowed and forbidden transition, terminal and active sets."""

from __future__ import annotations

import itertools

import pytest

from cloudphone.saga import InvalidTransitionError, SagaError, SagaStatus
from cloudphone.saga.state import ACTIVE, TERMINAL, TRANSITIONS, can_transition, check_transition

S = SagaStatus

# Written out from DESIGN.md §1 (and the operator actions), independently of state.py.
ALLOWED: frozenset[tuple[SagaStatus, SagaStatus]] = frozenset(
    {
        (S.PENDING, S.RUNNING),  # claimed by a worker
        (S.PENDING, S.COMPENSATING),  # cancelled before any step started: undo step 0
        (S.PENDING, S.COMPENSATED),  # ... which has no compensation
        (S.PENDING, S.FAILED),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.COMPENSATING),
        (S.RUNNING, S.FAILED),
        # Turning back with nothing to undo: COMPENSATING is passed in the same write.
        (S.RUNNING, S.COMPENSATED),
        (S.RUNNING, S.TIMED_OUT),
        (S.COMPENSATING, S.COMPENSATED),
        (S.COMPENSATING, S.TIMED_OUT),
        (S.COMPENSATING, S.FAILED),
        (S.FAILED, S.RUNNING),  # operator retry, forward
        (S.FAILED, S.COMPENSATING),  # operator retry, while compensating
    }
)

MOVES = [(a, b) for a, b in itertools.product(S, S) if a != b]


def _id(pair: tuple[SagaStatus, SagaStatus]) -> str:
    return f"{pair[0]}->{pair[1]}"


@pytest.mark.parametrize("pair", sorted(ALLOWED), ids=_id)
def test_allowed_transition_is_accepted(pair: tuple[SagaStatus, SagaStatus]) -> None:
    current, new = pair
    assert can_transition(current, new)
    assert check_transition(current, new) is new


FORBIDDEN = [pair for pair in MOVES if pair not in ALLOWED]


@pytest.mark.parametrize("pair", FORBIDDEN, ids=_id)
def test_forbidden_transition_is_refused(pair: tuple[SagaStatus, SagaStatus]) -> None:
    current, new = pair
    assert not can_transition(current, new)
    with pytest.raises(InvalidTransitionError) as caught:
        check_transition(current, new)
    message = str(caught.value)
    assert str(current) in message
    assert str(new) in message
    assert message.index(str(current)) < message.index(str(new))


def test_forbidden_transition_message_reads_naturally() -> None:
    with pytest.raises(InvalidTransitionError, match="a saga cannot go from COMPLETED to RUNNING"):
        check_transition(S.COMPLETED, S.RUNNING)


def test_invalid_transition_error_is_a_saga_error() -> None:
    assert issubclass(InvalidTransitionError, SagaError)


@pytest.mark.parametrize("status", list(S))
def test_staying_put_is_always_allowed(status: SagaStatus) -> None:
    assert can_transition(status, status)
    assert check_transition(status, status) is status


def test_table_matches_the_design_exactly() -> None:
    """The table in state.py holds exactly the design's transitions, for every status."""
    assert set(TRANSITIONS) == set(S)
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED


def test_no_status_lists_itself_as_a_target() -> None:
    assert all(status not in targets for status, targets in TRANSITIONS.items())


@pytest.mark.parametrize("status", [S.COMPLETED, S.COMPENSATED, S.TIMED_OUT])
def test_finished_statuses_have_no_way_out(status: SagaStatus) -> None:
    assert TRANSITIONS[status] == frozenset()
    assert not any(can_transition(status, other) for other in S if other != status)


def test_failed_leaves_only_through_operator_retry() -> None:
    """FAILED resumes RUNNING or COMPENSATING; it can never be declared done by a worker."""
    assert TRANSITIONS[S.FAILED] == {S.RUNNING, S.COMPENSATING}
    for done in (S.COMPLETED, S.COMPENSATED, S.TIMED_OUT, S.PENDING):
        assert not can_transition(S.FAILED, done)


def test_any_active_status_can_fail() -> None:
    assert all(can_transition(status, S.FAILED) for status in ACTIVE)


def test_compensated_and_timed_out_come_from_active_runs_only() -> None:
    """Compensation ends are reached while compensating, or directly when nothing is undone.

    RUNNING goes straight to COMPENSATED/TIMED_OUT only when no started step has a compensation
    (the history still records compensation_started); an untouched PENDING run may be cancelled.
    """
    for end in (S.COMPENSATED, S.TIMED_OUT):
        sources = {a for a, b in ALLOWED if b is end}
        assert sources <= {S.COMPENSATING, S.RUNNING, S.PENDING}
    assert not can_transition(S.PENDING, S.TIMED_OUT)
    assert not can_transition(S.FAILED, S.COMPENSATED)


def test_completed_is_only_reached_from_running() -> None:
    assert {a for a, b in ALLOWED if b is S.COMPLETED} == {S.RUNNING}


def test_every_status_is_reachable_from_pending() -> None:
    seen = {S.PENDING}
    frontier = [S.PENDING]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


@pytest.mark.parametrize(
    ("status", "terminal", "active"),
    [
        (S.PENDING, False, True),
        (S.RUNNING, False, True),
        (S.COMPENSATING, False, True),
        (S.COMPLETED, True, False),
        (S.COMPENSATED, True, False),
        (S.TIMED_OUT, True, False),
        (S.FAILED, True, False),
    ],
)
def test_is_terminal_and_is_active(status: SagaStatus, terminal: bool, active: bool) -> None:
    assert status.is_terminal is terminal
    assert status.is_active is active


def test_active_and_terminal_partition_the_statuses() -> None:
    assert set(S) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL


def test_status_values_are_their_stored_names() -> None:
    """Values are persisted; they equal the member names and never change silently."""
    assert [s.value for s in S] == [
        "PENDING",
        "RUNNING",
        "COMPENSATING",
        "COMPLETED",
        "COMPENSATED",
        "TIMED_OUT",
        "FAILED",
    ]
    assert all(s.value == s.name for s in S)
