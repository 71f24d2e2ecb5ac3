"""What ``start()`` stores: the input validated and dumped as JSON, and its other checks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from cloudphone.saga.definition import Saga
from cloudphone.saga.errors import InvalidSagaInputError
from cloudphone.saga.outputs import json_problem, validation_reasons


def stored_input(
    saga: Saga[Any], value: object, idempotency_key: str | None, started_by: str | None
) -> dict[str, Any]:
    """What a run of ``saga`` started with ``value`` stores as its input (JSON).

    Raises:
        InvalidSagaInputError: The input does not validate or is not JSON, or the
            idempotency key or ``started_by`` is unfit.
    """
    data = input_json(saga, value)
    check_input(data, idempotency_key, started_by)
    return data


def seconds(duration: timedelta, name: str) -> float:
    """``duration`` in seconds; refuses the bare numbers this API used to take."""
    if not isinstance(duration, timedelta):
        raise TypeError(f"{name} must be a timedelta, got {type(duration).__name__}")
    return duration.total_seconds()


def input_json(saga: Saga[Any], value: object) -> dict[str, Any]:
    """The input of a run of ``saga`` as stored: validated into its input type, as JSON.

    Raises:
        InvalidSagaInputError: It does not validate (``errors`` holds pydantic's reasons), or
            (an untyped saga) it is not a dict.
    """
    adapter = saga.input_adapter
    if adapter is None:
        if not isinstance(value, dict):
            raise InvalidSagaInputError(f"saga data must be a dict, got {type(value).__name__}")
        return dict(value)
    try:
        dumped = adapter.dump_python(adapter.validate_python(value), mode="json")
    except ValidationError as error:
        reasons = validation_reasons(error)
        raise InvalidSagaInputError(
            f"input of saga {saga.name!r} does not fit {_type_name(saga)}: {reasons}",
            [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()],
        ) from None
    except (TypeError, ValueError) as error:  # not serialisable to JSON
        raise InvalidSagaInputError(f"input of saga {saga.name!r} is not JSON: {error}") from None
    if not isinstance(dumped, dict):
        raise InvalidSagaInputError(
            f"input of saga {saga.name!r} must dump to a JSON object, got {type(dumped).__name__}"
        )
    return dumped


def _type_name(saga: Saga[Any]) -> str:
    return getattr(saga.input_type, "__name__", repr(saga.input_type))


def check_input(data: Any, idempotency_key: str | None, started_by: str | None) -> None:
    """Refuse data that is not plain JSON (PostgreSQL stores no NUL) and unfit keys."""
    if not isinstance(data, dict):
        raise InvalidSagaInputError(f"saga data must be a dict, got {type(data).__name__}")
    try:
        dumped = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidSagaInputError(f"saga data must be JSON: {error}") from None
    # PostgreSQL cannot store NUL; the dump shows any as \u0000, so only then look closer.
    problem = json_problem(data, "data") if "\\u0000" in dumped else None
    if problem is not None:
        raise InvalidSagaInputError(f"saga data must be JSON: {problem}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise InvalidSagaInputError("idempotency_key must be 1-255 characters")
    for name, text in (("idempotency_key", idempotency_key), ("started_by", started_by)):
        if text is not None and "\x00" in text:
            raise InvalidSagaInputError(f"{name} contains a NUL character")
