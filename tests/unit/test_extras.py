"""The extras the code checks for are the ones ``pyproject.toml`` declares, module by module."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from cloudphone.extras import EXTRAS, MissingExtraError, require_extra

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def distributions(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings."""
    return {
        re.split(r"[\[<>=;! ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_checked_module_comes_from_its_extra(extra: str) -> None:
    """Every module `require_extra` looks for is installed by a distribution of that extra."""
    declared = distributions(PYPROJECT["project"]["optional-dependencies"][extra])
    providers = packages_distributions()
    for module in EXTRAS[extra]:
        top = module.split(".")[0]
        names = {n.lower().replace("_", "-") for n in providers.get(top, [])}
        assert names & declared, f"{module} ({names}) is not from cloudphone[{extra}]"


def test_all_is_every_adapter_extra_and_dev_includes_all() -> None:
    """One line installs everything a newcomer needs: `pip install -e ".[dev]"`."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    assert optional["all"] == [f"cloudphone[{','.join(sorted(EXTRAS))}]"]
    assert "cloudphone[all]" in optional["dev"]
    runtime = distributions(PYPROJECT["project"]["dependencies"])
    assert runtime.isdisjoint({"httpx", "stripe", "aiohttp", "aiobotocore", "aiodocker"})


def test_a_missing_module_names_the_extra_and_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error says what asked for the adapter and what to install."""
    monkeypatch.setitem(EXTRAS, "stripe", ("cloudphone_no_such_module",))
    with pytest.raises(MissingExtraError) as missing:
        require_extra("stripe", needed_for="CLOUDPHONE_BILLING__PROVIDER=stripe")
    message = str(missing.value)
    assert message.startswith("CLOUDPHONE_BILLING__PROVIDER=stripe needs the 'stripe' extra")
    assert "cloudphone_no_such_module" in message
    assert "install cloudphone[stripe]" in message
