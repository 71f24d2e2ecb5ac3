"""outputs.check_output: a step must return None or a dict of JSON values with string keys."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from cloudphone.saga import NonRetryableError, RetryPolicy, StepKind, StepOutputError
from cloudphone.saga.definition import Step
from cloudphone.saga.outputs import check_output


async def act(ctx: Any) -> None:
    return None


STEP = Step(name="UPLOAD_TO_STORAGE", index=1, action=act, kind=StepKind.COMPENSATABLE)
NOT_JSON = r"^step 'UPLOAD_TO_STORAGE' returned data that is not JSON: "


def test_none_means_no_output() -> None:
    assert check_output(STEP, None) is None


@pytest.mark.parametrize(
    "output",
    [
        {},
        {"key": "apps/1.apk", "size": 10, "ratio": 0.5, "ok": True, "etag": None},
        {"parts": [1, 2, {"n": "x"}], "meta": {"nested": {"deep": [None, False]}}},
        {"unicode": "ünïcødé", "": "empty key is a string"},
        OrderedDict(a=1),
    ],
)
def test_json_objects_are_returned_unchanged(output: dict[str, Any]) -> None:
    assert check_output(STEP, output) is output


@pytest.mark.parametrize(
    ("output", "type_name"),
    [
        ([1, 2], "list"),
        ("done", "str"),
        (42, "int"),
        ((("a", 1),), "tuple"),
        (True, "bool"),
        ({"a"}, "set"),
    ],
)
def test_non_dicts_are_refused_naming_step_and_type(output: object, type_name: str) -> None:
    with pytest.raises(StepOutputError) as caught:
        check_output(STEP, output)
    assert str(caught.value) == (
        f"step 'UPLOAD_TO_STORAGE' returned {type_name}; it must return a dict of JSON values, "
        "a pydantic model or dataclass instance, or None"
    )


@pytest.mark.parametrize(
    "output",
    [{"x": math.nan}, {"x": math.inf}, {"x": -math.inf}, {"x": [1, {"y": math.nan}]}],
    ids=["nan", "inf", "-inf", "nested-nan"],
)
def test_nan_and_infinity_are_refused(output: dict[str, Any]) -> None:
    with pytest.raises(StepOutputError, match=NOT_JSON):
        check_output(STEP, output)


@pytest.mark.parametrize(
    "value",
    [object(), b"bytes", {1, 2}, datetime(2030, 1, 1, tzinfo=UTC), Decimal("1.5"), 1j],
    ids=["object", "bytes", "set", "datetime", "decimal", "complex"],
)
def test_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(StepOutputError, match=NOT_JSON):
        check_output(STEP, {"value": value})


@pytest.mark.parametrize(
    "output",
    [{1: "a"}, {None: "a"}, {True: "a"}, {1.5: "a"}, {"ok": 1, 2: "b"}],
    ids=["int", "none", "bool", "float", "mixed"],
)
def test_non_string_keys_are_refused(output: dict[Any, Any]) -> None:
    with pytest.raises(
        StepOutputError,
        match=r"^step 'UPLOAD_TO_STORAGE' returned data that is not JSON: .*non-string key",
    ):
        check_output(STEP, output)


@pytest.mark.parametrize(
    ("output", "where"),
    [
        ({"name": "a\x00b"}, "output['name'] contains a NUL character"),
        ({"list": ["ok", {"deep": "\x00"}]}, "output['list'][1]['deep'] contains a NUL"),
        ({"a\x00b": 1}, "output has a key with a NUL character 'a\\x00b'"),
    ],
    ids=["value", "nested", "key"],
)
def test_nul_characters_are_refused(output: dict[str, Any], where: str) -> None:
    """PostgreSQL cannot store NUL: the output is refused on every database, naming where."""
    with pytest.raises(StepOutputError) as caught:
        check_output(STEP, output)
    assert str(caught.value).startswith(
        f"step 'UPLOAD_TO_STORAGE' returned data that is not JSON: {where}"
    )


def test_unserialisable_keys_are_refused() -> None:
    with pytest.raises(StepOutputError, match=NOT_JSON):
        check_output(STEP, {(1, 2): "tuple key"})


def test_nested_non_string_keys_are_refused() -> None:
    """JSON would turn the nested key 5555 into "5555": the data would change once stored."""
    with pytest.raises(StepOutputError, match="UPLOAD_TO_STORAGE"):
        check_output(STEP, {"ports": {5555: "adb"}})


def test_output_error_is_never_retried() -> None:
    """Retrying would only return the same bad value again."""
    with pytest.raises(StepOutputError) as caught:
        check_output(STEP, [])
    assert isinstance(caught.value, NonRetryableError)
    assert not RetryPolicy().is_retryable(caught.value)
