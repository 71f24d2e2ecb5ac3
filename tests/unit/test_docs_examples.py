"""The examples in docs/engine.md run as they stand (the marked code blocks are executed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ENGINE_DOC = Path(__file__).parents[2] / "docs" / "engine.md"
MARKED = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)\n```", re.S)


def examples() -> dict[str, str]:
    """The marked Python blocks of the engine doc, by name."""
    return {m["name"]: m["code"] for m in MARKED.finditer(ENGINE_DOC.read_text())}


def test_every_feature_has_a_marked_example() -> None:
    assert set(examples()) >= {"testing-your-sagas", "typed-sagas", "step-kinds", "retry-budgets"}


def test_the_versions_and_fork_examples_are_marked() -> None:
    assert {"versions", "fork"} <= set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_example_runs(name: str) -> None:
    # dont_inherit: the example runs as a user's module would, without this file's
    # ``from __future__ import annotations`` (its dataclasses could not resolve theirs).
    code = compile(examples()[name], f"{ENGINE_DOC}#{name}", "exec", dont_inherit=True)
    exec(code, {"__name__": f"docs_example_{name}"})
