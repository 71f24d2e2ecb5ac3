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


def test_the_testing_example_is_marked() -> None:
    assert "testing-your-sagas" in examples()


def test_the_versions_and_fork_examples_are_marked() -> None:
    assert {"versions", "fork"} <= set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_example_runs(name: str) -> None:
    code = compile(examples()[name], f"{ENGINE_DOC}#{name}", "exec")
    exec(code, {"__name__": f"docs_example_{name}"})
