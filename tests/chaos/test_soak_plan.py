"""The soak's schedule: a seed names it, and the faults the issue asks for are all in it."""

from __future__ import annotations

import itertools

import pytest

from tests.chaos.soak_plan import BIG_FAULTS, CI, LONG, PROFILES, Profile, plan


def test_a_seed_names_one_schedule() -> None:
    """The same seed gives the same operations and faults; another seed, others."""
    first, again, other = plan(CI, 14), plan(CI, 14), plan(CI, 15)
    assert (first.operations, first.faults) == (again.operations, again.faults)
    assert first.faults != other.faults


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_planned_fault_and_operation_falls_in_the_window(name: str) -> None:
    """Faults inside the window, in time order; the operations as many as the profile says."""
    profile = PROFILES[name]
    schedule = plan(profile, 3)
    assert [f.at for f in schedule.faults] == sorted(f.at for f in schedule.faults)
    assert all(0 < f.at < profile.window for f in schedule.faults)
    assert len(schedule.operations) == sum(profile.operations.values())
    assert {op.user for op in schedule.operations} == {f"soak-u{i}" for i in range(profile.users)}


@pytest.mark.parametrize("profile", [CI, LONG], ids=["ci", "long"])
def test_the_issue_s_floors_are_planned(profile: Profile) -> None:
    """≥ 10 worker kills, the API killed once, one PostgreSQL restart, an S3 outage."""
    faults = plan(profile, 14).faults
    kinds = [f.kind for f in faults]
    assert kinds.count("kill_worker") >= 10
    assert (kinds.count("kill_api"), kinds.count("restart_postgres")) == (1, 1)
    assert kinds.count("s3_outage") >= 1


def test_outages_are_kept_apart() -> None:
    """PostgreSQL, API and S3 outages each get their own slice: never two at the same moment."""
    for seed in range(50):
        big = [f.at for f in plan(LONG, seed).faults if f.kind in BIG_FAULTS]
        gaps = [b - a for a, b in itertools.pairwise(big)]
        assert min(gaps) > 0.05 * LONG.window, (seed, big)
