"""Property-based checks of the running API against its own OpenAPI document (schemathesis).

For every operation, generated requests — valid ones and invalid ones — must never get a 5xx,
and every response must match the status codes, content types, headers and schemas the
document declares; invalid requests must be rejected. Bounded: a fixed number of examples per
operation and mode, derandomized, no deadline.

(schemathesis' own pytest plugin does not run on this pytest; its Hypothesis strategies are
used directly instead.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudphone.api.app import create_app
from cloudphone.domain import Role
from cloudphone.settings import Settings
from tests.support.server import TEST_SECRET, CloudphoneProcess, auth

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) to test, read from the app's document without starting it.

    Operations that take no input at all have no invalid requests to generate.
    """
    app = create_app(Settings(jwt_secret=TEST_SECRET))  # type: ignore[arg-type]
    spec: dict[str, Any] = app.openapi()
    return [
        (method.upper(), path, mode)
        for path, operations in sorted(spec["paths"].items())
        for method, operation in sorted(operations.items())
        for mode in EXAMPLES
        if mode is GenerationMode.POSITIVE
        or operation.get("parameters")
        or operation.get("requestBody")
    ]


@pytest.fixture(scope="module")
def api_schema(sqlite_server: CloudphoneProcess) -> Any:
    """The OpenAPI document the running server serves."""
    return schemathesis.openapi.from_url(f"{sqlite_server.base_url}/openapi.json")


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER], ids=lambda r: r.value)
def test_every_operation_honours_the_openapi_document(
    api_schema: Any, method: str, path: str, mode: GenerationMode, role: Role
) -> None:
    """No 5xx; responses as documented; invalid input rejected with a documented 4xx."""
    operation = api_schema[path][method]
    headers = auth(f"fuzz-{role.value}", role)
    secured = bool(operation.definition.raw.get("security", api_schema.raw_schema.get("security")))

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES[mode] if role is Role.ADMIN else EXAMPLES[mode] // 3,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        # A negative case may leave out the bearer token the operation requires, on purpose:
        # adding a valid token back would make it a valid request, rightly accepted.
        given = {name.lower() for name in case.headers or {}}
        dropped = secured and mode is GenerationMode.NEGATIVE and "authorization" not in given
        case.call_and_validate(headers=None if dropped else headers, checks=CHECKS, timeout=10)

    check()
