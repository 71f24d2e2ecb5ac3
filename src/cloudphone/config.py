"""Building blocks of every settings section: the :data:`Duration` type and renamed fields.

The services' sections (``apps/config.py``, ``billing/config.py``, ``devices/config.py``) and
:mod:`cloudphone.settings` use them, so every duration in every section reads the same way
and an old variable name keeps working (with a warning) after a rename.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    model_validator,
)

_HUMAN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_PYDANTIC_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)

DURATION_FORMS = "250ms, 3s, 5m, 1h, 7d, plain seconds (3 or 1.5) or ISO 8601 (PT3S)"
"""What a duration may look like, for error messages and help texts."""


def parse_duration(text: str) -> timedelta:
    """A duration as people write it: see :data:`DURATION_FORMS`.

    ``HH:MM:SS`` is accepted too (pydantic's own format).

    Raises:
        ValueError: ``text`` is none of those forms.
    """
    match = _HUMAN.match(text)
    if match is not None:
        return _seconds(float(match.group(1)) * _UNITS[match.group(2)], text)
    try:
        return _PYDANTIC_TIMEDELTA.validate_python(text.strip())
    except ValidationError:
        raise ValueError(f"{text!r} is not a duration: use {DURATION_FORMS}") from None


def format_duration(value: timedelta) -> str:
    """The shortest of ``250ms``, ``3s``, ``5m``, ``12h``, ``7d`` that is exact (``90s``)."""
    millis = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def _to_timedelta(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):  # a bool is an int to Python, never a duration to a user
        raise ValueError(f"{value!r} is not a duration: use {DURATION_FORMS}")
    if isinstance(value, int | float):
        return _seconds(value, value)
    return value


def _seconds(seconds: float, given: object) -> timedelta:
    """``seconds`` as a duration; one past what a duration holds is refused, not a crash."""
    if math.isnan(seconds):
        raise ValueError(f"{given!r} is not a duration: use {DURATION_FORMS}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{given!r} is longer than any duration can be") from None


Duration = Annotated[timedelta, BeforeValidator(_to_timedelta)]
"""The type of every duration setting: a :class:`~datetime.timedelta` that also reads
``250ms``, ``3s``, ``5m``, ``1h``, ``7d``, plain seconds (``3``, ``1.5``) and ISO 8601
(``PT3S``). Bounds go on the field: ``Field(default=..., gt=timedelta(0))``."""


@dataclass(frozen=True)
class Renamed:
    """An old field name kept as a deprecated alias of ``new``.

    Attributes:
        new: The field's current name.
        convert: Turns an old value into a new one (default: unchanged; a plain number of
            seconds is still a valid :data:`Duration`).
    """

    new: str
    convert: Callable[[Any], Any] = lambda value: value


def milliseconds(value: Any) -> timedelta:
    """An old ``*_ms`` value (a number of milliseconds) as a duration."""
    return timedelta(milliseconds=float(value))


class Section(BaseModel):
    """Base of a settings section: attribute docstrings describe fields, old names still work.

    Each field's docstring is its description (``cloudphone config show`` prints it). A
    section lists ``renamed = {"old_name": Renamed("new_name")}`` and its variable prefix
    (``env_prefix = "CLOUDPHONE_DEVICES__"``) for the warning. A value given under an old name
    moves to the new one (the new name wins when both are given) with a ``FutureWarning``
    naming both variables.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    renamed: ClassVar[Mapping[str, Renamed]] = {}
    env_prefix: ClassVar[str] = "CLOUDPHONE_"

    @model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, data: Any) -> Any:
        if not cls.renamed or not isinstance(data, Mapping):
            return data
        values = dict(data)
        for old, rename in cls.renamed.items():
            if old not in values:
                continue
            value = values.pop(old)
            old_var, new_var = (cls.env_prefix + name.upper() for name in (old, rename.new))
            warnings.warn(
                f"{old_var} is deprecated and will go away: use {new_var} "
                f"(a duration: {DURATION_FORMS})",
                FutureWarning,
                stacklevel=2,
            )
            values.setdefault(rename.new, rename.convert(value))
        return values
