"""What a soak does and when: the profiles, and the seeded schedule of operations and faults.

A profile says how many operations of each kind the users send over how long a window, and
which faults hit the platform meanwhile. :func:`plan` turns a profile and a seed into a
schedule: each operation and each fault gets a moment in the window, drawn from one seeded
random generator, so a seed names a run (the platform's own timing still varies).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

OPERATIONS = ("demo", "payment", "upload", "device", "install")
"""Kinds of user operation (see ``soak_load``)."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one soak."""

    name: str
    window: float
    """Seconds over which operations and faults are spread."""
    operations: dict[str, int]
    """How many operations of each kind (a payment may start several refunds)."""
    faults: dict[str, int]
    """How many faults of each kind."""
    min_sagas: int
    """Fewest saga runs the soak must have made (the issue's floor)."""
    users: int = 4
    concurrency: int = 16
    """Operations in flight at once at most."""
    large_uploads: int = 3
    """How many of the uploads are large (multipart, several MiB)."""
    drain: float = 120.0
    """Longest wait, after the load, for every saga and device to settle."""


CI = Profile(
    name="ci",
    window=75.0,
    operations={"demo": 190, "payment": 45, "upload": 45, "device": 20, "install": 24},
    faults={
        "kill_worker": 10,
        "kill_api": 1,
        "restart_postgres": 1,
        "s3_outage": 1,
        "kill_device": 4,
        "stripe_error": 3,
        "stripe_lost_answer": 3,
    },
    min_sagas=300,
)
"""Run by ``tests/chaos/test_soak.py`` in the normal suite (well under 4 minutes)."""

LONG = Profile(
    name="long",
    window=540.0,
    operations={"demo": 1150, "payment": 300, "upload": 300, "device": 130, "install": 150},
    faults={
        "kill_worker": 40,
        "kill_api": 1,
        "restart_postgres": 1,
        "s3_outage": 4,
        "kill_device": 25,
        "stripe_error": 15,
        "stripe_lost_answer": 15,
    },
    min_sagas=2000,
    large_uploads=20,
    drain=240.0,
)
"""``python -m tests.chaos.soak --profile long``: the result recorded in tests/chaos/README.md."""

SMOKE = Profile(
    name="smoke",
    window=20.0,
    operations={"demo": 30, "payment": 8, "upload": 8, "device": 4, "install": 4},
    faults={"kill_worker": 2, "kill_api": 1, "restart_postgres": 1, "s3_outage": 1,
            "kill_device": 1, "stripe_error": 1, "stripe_lost_answer": 1},
    min_sagas=40,
    large_uploads=1,
    drain=60.0,
)  # fmt: skip
"""A quick look while changing the soak itself (not a proof: too few of everything)."""

PROFILES = {profile.name: profile for profile in (SMOKE, CI, LONG)}

BIG_FAULTS = ("restart_postgres", "kill_api", "s3_outage")
"""Faults that take a whole service away: kept apart so each recovery is seen on its own."""


@dataclass(frozen=True)
class Operation:
    """One user operation at a moment of the window."""

    at: float
    kind: str
    user: str
    number: int
    seed: int


@dataclass(frozen=True)
class Fault:
    """One fault at a moment of the window."""

    at: float
    kind: str
    pick: int
    """Which worker or device it hits (modulo how many there are)."""


@dataclass
class Plan:
    """A profile's schedule for one seed."""

    profile: Profile
    seed: int
    operations: list[Operation] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def plan(profile: Profile, seed: int) -> Plan:
    """The seeded schedule of ``profile``: operations uniform over the window, faults in it."""
    rng = random.Random(seed)
    schedule = Plan(profile, seed)
    number = 0
    for kind in OPERATIONS:
        for _ in range(profile.operations.get(kind, 0)):
            at = rng.uniform(0, profile.window)
            user = f"soak-u{rng.randrange(profile.users)}"
            schedule.operations.append(Operation(at, kind, user, number, rng.randrange(2**32)))
            number += 1
    schedule.operations.sort(key=lambda op: op.at)
    schedule.faults = sorted(_faults(profile, rng), key=lambda f: f.at)
    return schedule


def _faults(profile: Profile, rng: random.Random) -> list[Fault]:
    window = profile.window
    big = [kind for kind in BIG_FAULTS for _ in range(profile.faults.get(kind, 0))]
    rng.shuffle(big)
    faults = []
    # The big faults each get their own slice of the middle 80 % of the window.
    slice_ = 0.8 * window / max(len(big), 1)
    for i, kind in enumerate(big):
        start = 0.1 * window + i * slice_
        faults.append(Fault(rng.uniform(start, start + 0.6 * slice_), kind, 0))
    for kind, count in profile.faults.items():
        if kind in BIG_FAULTS:
            continue
        for _ in range(count):
            faults.append(Fault(rng.uniform(0.05 * window, 0.95 * window), kind, rng.randrange(99)))
    return faults
