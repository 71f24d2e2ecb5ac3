"""Saga versions: the definition's version, the registry by (name, version), the pivot marker."""

from __future__ import annotations

from typing import Any

import pytest

from cloudphone.saga import Saga, SagaDefinitionError, UnknownSagaTypeError, decide
from cloudphone.saga.registry import SagaRegistry
from tests.unit.test_decide import NOW, STARTED, make_state
from tests.unit.test_migrate import version


async def act(ctx: Any) -> None:
    return None


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_version_is_a_positive_int(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="version must be an int >= 1"):
        Saga("v_saga", version=bad)


def test_a_definition_knows_its_key_and_shows_its_version() -> None:
    assert (Saga("v_saga").version, Saga("v_saga").key) == (1, ("v_saga", 1))
    two = Saga("v_saga", version=2)
    two.step("A")(act)
    assert (two.key, repr(two)) == (("v_saga", 2), "Saga('v_saga', version=2, steps=['A'])")


def test_the_registry_holds_versions_side_by_side_and_starts_take_the_newest() -> None:
    v3, v1, v2 = (version(n, ["A", "B"], pivot=None) for n in (3, 1, 2))
    registry = SagaRegistry([v3, v1, v2])
    assert list(registry) == [("op_saga", 1), ("op_saga", 2), ("op_saga", 3)]
    assert registry.latest == {"op_saga": v3}
    assert (registry[("op_saga", 1)], registry.get(("op_saga", 4))) == (v1, None)
    assert registry.versions("op_saga") == [1, 2, 3]
    assert registry.versions("other") == []
    assert (registry.require("op_saga"), registry.require("op_saga", 2)) == (v3, v2)


def test_the_same_name_and_version_twice_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="'op_saga' version 2 is registered twice"):
        SagaRegistry([version(2, ["A"]), version(2, ["B"])])


def test_an_incomplete_definition_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="has no steps"):
        SagaRegistry([Saga("empty")])


def test_an_unknown_name_or_version_says_what_is_registered() -> None:
    registry = SagaRegistry([version(1, ["A"]), version(3, ["A"])])
    with pytest.raises(UnknownSagaTypeError, match="unknown saga type 'nope'; known: op_saga"):
        registry.require("nope")
    with pytest.raises(UnknownSagaTypeError, match=r"version 2 .* not registered.*1, 3"):
        registry.require("op_saga", 2)


def test_the_pivots_success_is_marked_in_the_history() -> None:
    """A run migrated from a version this process lacks still shows where its pivot was."""
    saga = version(1, ["A", "P", "C"])
    at_pivot = decide.on_step_success(make_state(saga, "P"), saga, None, STARTED, NOW)
    before = decide.on_step_success(make_state(saga, "A"), saga, None, STARTED, NOW)
    assert at_pivot.events[0].detail["pivot"] is True
    assert "pivot" not in before.events[0].detail
