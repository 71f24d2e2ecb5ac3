"""Each step's output kept under its step: the merged view, collisions, typed reads.

A run stores its input (``saga_runs.data``, never changed after the start) and each step's
latest output under the step's name (``saga_runs.outputs``; JSON null for a step that returned
nothing). ``ctx.data`` is the merged read-only view: the input, then each step's output in
step order. A step may replace its own earlier output (a re-run), never a key of the input or
of another step's output.

Runs started before per-step outputs existed (migration 0011) hold the merged data in their
input and no outputs for the steps they ran then. For such a *legacy* run ``ctx.output(step)``
of a step it ran before the upgrade answers the merged data (all that is known), and its
steps may return keys that are already in that merged data.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError

from cloudphone.saga.errors import MissingOutputError, NonRetryableError, StepOutputError

if TYPE_CHECKING:
    from cloudphone.saga.definition import Step

T = TypeVar("T")


def merged_data(
    input_data: Mapping[str, Any], outputs: Mapping[str, Any], order: Sequence[str] = ()
) -> dict[str, Any]:
    """The input, then each step's output (steps in ``order`` first, then the others)."""
    data = dict(input_data)
    found = 0
    for name in order:
        if name in outputs:
            found += 1
            output = outputs[name]
            if output:
                data.update(output)
    if found < len(outputs):  # steps the definition does not name (rare): after the others
        for name, output in outputs.items():
            if output and name not in order:
                data.update(output)
    return data


def is_legacy(outputs: Mapping[str, Any], order: Sequence[str], current: int) -> bool:
    """Whether a step before ``current`` has no output: it ran before outputs were kept."""
    return any(name not in outputs for name in order[: max(current, 0)])


def collision(
    step: str,
    output: Mapping[str, Any],
    input_data: Mapping[str, Any],
    outputs: Mapping[str, Any],
    legacy: Callable[[], bool],
) -> str | None:
    """Why ``step`` may not return ``output`` (a key another part of the data has), or None.

    ``legacy`` is asked only when a key is the input's (the input of a legacy run holds its
    earlier steps' outputs, which its steps may return again).
    """
    for key in output:
        if key in input_data and not legacy():
            return f"step {step!r} returned key {key!r}, which the saga input already has"
        for other, earlier in outputs.items():
            if other != step and earlier and key in earlier:
                return f"step {step!r} returned key {key!r}, which step {other!r} already set"
    return None


def check_collision(
    step: str,
    output: Mapping[str, Any] | None,
    input_data: Mapping[str, Any],
    outputs: Mapping[str, Any],
    legacy: Callable[[], bool],
) -> None:
    """Raise StepOutputError if ``output`` would overwrite the input or another step's key."""
    if not output:
        return
    problem = collision(step, output, input_data, outputs, legacy)
    if problem is not None:
        raise StepOutputError(
            f"{problem}; each step's output is kept under its step: use another key, and read "
            "earlier outputs with ctx.output(step)"
        )


def dump_output(output: object) -> object:
    """A pydantic model or dataclass instance as its JSON object; anything else as it is."""
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return adapter(type(output)).dump_python(output, mode="json")
    return output


def adapter(kind: Any) -> TypeAdapter[Any]:
    """The (cached) pydantic TypeAdapter of ``kind``: building one costs milliseconds."""
    return _adapter(kind)


@lru_cache(maxsize=256)
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


class RunView:
    """What a step's context knows of its run: the input and the outputs so far.

    One per context. It reads the run's data without copying it up front; what it hands out
    is a private copy (the input once, parsed into the input type on first use; an output on
    each read), so a step cannot change the run's data except by returning its output.

    Args:
        input_data: The run's input (JSON).
        outputs: Step name to that step's output (None: it returned nothing).
        order: The saga's step names in order.
        current: Index of the step being run or compensated.
        input_type: The saga's input type (None: plain dict input).
    """

    def __init__(
        self,
        input_data: dict[str, Any],
        outputs: dict[str, Any],
        order: Sequence[str],
        current: int,
        input_type: type[Any] | None = None,
    ) -> None:
        self.input_data = input_data
        self.outputs = outputs
        self.order = tuple(order)
        self.current = current
        self._input_type = input_type
        self._parsed: Any = None
        self._parsed_once = False

    def input(self) -> Any:
        """The input, parsed into the saga's input type (a dict for untyped sagas)."""
        if self._parsed_once:
            return self._parsed
        copied = copy.deepcopy(self.input_data)
        kind = self._input_type
        if kind is None:
            self._parsed = copied
        else:
            try:
                self._parsed = adapter(kind).validate_python(copied)
            except ValidationError as error:
                raise NonRetryableError(
                    f"the run's stored input does not fit {kind.__name__}: "
                    f"{validation_reasons(error)}"
                ) from None
        self._parsed_once = True
        return self._parsed

    def legacy(self) -> bool:
        """Whether the run started before outputs were kept per step (see the module doc)."""
        return is_legacy(self.outputs, self.order, self.current)

    @overload
    def output(self, step: str, kind: None = None) -> dict[str, Any]: ...

    @overload
    def output(self, step: str, kind: type[T]) -> T: ...

    def output(self, step: str, kind: type[T] | None = None) -> dict[str, Any] | T:
        """``step``'s output (a copy), validated into ``kind`` if given."""
        value = self._raw(step)
        if kind is None:
            return copy.deepcopy(value)
        try:
            parsed: T = adapter(kind).validate_python(value)
        except ValidationError as error:
            raise StepOutputError(
                f"the output of step {step!r} does not fit {kind.__name__}: "
                f"{validation_reasons(error)}"
            ) from None
        return parsed

    def _raw(self, step: str) -> dict[str, Any]:
        if step not in self.order:
            raise MissingOutputError(f"the saga has no step {step!r}; it has {list(self.order)}")
        if step in self.outputs:
            output = self.outputs[step]
            if output is None:
                raise MissingOutputError(f"step {step!r} returned no output")
            return output  # type: ignore[no-any-return]
        index = self.order.index(step)
        if index >= self.current:
            at = self.order[self.current] if 0 <= self.current < len(self.order) else None
            raise MissingOutputError(f"step {step!r} has not run yet (the run is at {at!r})")
        if self.legacy():
            # It ran before outputs were kept per step: the merged data is all there is.
            return merged_data(self.input_data, self.outputs, self.order)
        raise MissingOutputError(f"step {step!r} has no recorded output")


def validation_reasons(error: ValidationError) -> str:
    """Pydantic's reasons as one line: ``field: message; …``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def check_output(step: Step, output: object) -> Mapping[str, Any] | None:
    """Refuse outputs that are not JSON objects: retrying would only return them again.

    A pydantic model or dataclass instance counts as its JSON form.
    """
    output = dump_output(output)
    if output is None:
        return None
    if not isinstance(output, Mapping):
        raise StepOutputError(
            f"step {step.name!r} returned {type(output).__name__}; it must return a dict of "
            "JSON values, a pydantic model or dataclass instance, or None"
        )
    problem = json_problem(output, "output")
    if problem is not None:
        raise StepOutputError(f"step {step.name!r} returned data that is not JSON: {problem}")
    return output


_SCALARS = (int, bool, type(None))
_IMMUTABLE = (str, int, float, bool, type(None))


def private_copy(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the merged data no step can change the run's data through.

    ``data`` is a new dict already: only nested lists and objects need copying (JSON, the
    fastest deep copy of JSON values here); most runs' data is flat and is used as it is.
    """
    for value in data.values():
        if type(value) not in _IMMUTABLE:
            return json.loads(json.dumps(data))  # type: ignore[no-any-return]
    return data


def json_problem(value: object, path: str) -> str | None:
    """Where ``value`` stops being plain JSON (string keys, finite numbers, no NUL), or None.

    PostgreSQL text and JSONB cannot hold NUL (U+0000), so a string or key with one is
    refused on every database alike.
    """
    if isinstance(value, str):
        return f"{path} contains a NUL character" if "\x00" in value else None
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            if "\x00" in key:
                return f"{path} has a key with a NUL character {key!r}"
            problem = json_problem(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = json_problem(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None
    return f"{path} is a {type(value).__name__}"
