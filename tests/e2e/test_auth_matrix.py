"""Who may call what: 401 without a valid token, 403 on admin routes, 404 on others' sagas.

Never a 500, whatever the credentials.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from cloudphone.api.auth import issue_token
from cloudphone.domain import Role
from tests.support.server import TEST_SECRET, CloudphoneProcess, auth

ROUTES = [
    ("GET", "/sagas"),
    ("GET", "/sagas/{id}"),
    ("POST", "/sagas/{id}/retry"),
    ("POST", "/sagas/{id}/cancel"),
    ("POST", "/sagas/{id}/resolve"),
    ("POST", "/sagas/{id}/migrate"),
    ("POST", "/sagas/{id}/fork"),
    ("POST", "/demo"),
    ("GET", "/metrics"),
    ("GET", "/apps"),
    ("GET", "/apps/{id}"),
    ("DELETE", "/apps/{id}"),
    ("POST", "/apps/{id}/publish"),
    ("POST", "/apps/{id}/unpublish"),
    ("GET", "/devices/{id}/apps"),
    ("POST", "/devices/{id}/apps"),
    ("DELETE", "/devices/{id}/apps/com.example.notes"),
]
ADMIN_ONLY = [
    route
    for route in ROUTES
    if route[1].endswith(("retry", "cancel", "resolve", "migrate", "fork", "publish"))
]
ADMIN_ONLY.append(("GET", "/metrics"))


def _claims(**changes: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "alice",
        "role": "user",
        "iss": "cloudphone",
        "iat": now,
        "exp": now + timedelta(hours=1),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(secret: str = TEST_SECRET, **changes: object) -> str:
    return jwt.encode(_claims(**changes), secret, algorithm="HS256")


EXPIRED = issue_token(
    TEST_SECRET,
    "alice",
    Role.USER,
    ttl=timedelta(minutes=1),
    now=datetime.now(UTC) - timedelta(hours=2),
)

BAD_CREDENTIALS = {
    "no header": (None, "unauthenticated"),
    "not bearer": ("Basic YWxpY2U6cHc=", "unauthenticated"),
    "garbage": ("Bearer not-a-jwt", "invalid_token"),
    "wrong secret": (f"Bearer {_signed('another-secret-' + 'y' * 32)}", "invalid_token"),
    "expired": (f"Bearer {EXPIRED}", "token_expired"),
    "wrong issuer": (f"Bearer {_signed(iss='someone-else')}", "invalid_token"),
    "no subject": (f"Bearer {_signed(sub=None)}", "invalid_token"),
    "nul in subject": (f"Bearer {_signed(sub='a' + chr(0) + 'b')}", "invalid_token"),
    "unknown role": (f"Bearer {_signed(role='root')}", "invalid_token"),
    "alg none": (
        "Bearer " + jwt.encode(_claims(role="admin"), key=None, algorithm="none"),  # type: ignore[arg-type]
        "invalid_token",
    ),
}


_BODIES: dict[str, dict[str, object]] = {
    "resolve": {"note": "n"},
    "migrate": {"to_version": 1},
    "fork": {"from_step": "PREPARE"},
}
"""Valid bodies of the operator actions that need one (by the path's last segment)."""


async def _call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        method,
        path,
        headers=headers,
        json=_BODIES.get(path.rsplit("/", 1)[-1], {} if method == "POST" else None),
    )


@pytest.fixture(scope="module")
def bobs_saga(sqlite_server: CloudphoneProcess) -> str:
    """A saga started by bob (one for the whole module)."""
    response = httpx.post(
        f"{sqlite_server.base_url}/demo", json={}, headers=auth("bob"), timeout=10
    )
    assert response.status_code == 202, response.text
    saga_id: str = response.json()["id"]
    return saga_id


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_every_route_but_the_probes_rejects_missing_or_bad_tokens(
    client: httpx.AsyncClient, bobs_saga: str, method: str, route: str, credential: str
) -> None:
    """401 with a JSON error and WWW-Authenticate, whatever the route."""
    header, code = BAD_CREDENTIALS[credential]
    headers = {"Authorization": header} if header else {}
    response = await _call(client, method, route.format(id=bobs_saga), headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "route"), ADMIN_ONLY)
async def test_users_get_403_on_admin_routes(
    client: httpx.AsyncClient, bobs_saga: str, bob: dict[str, str], method: str, route: str
) -> None:
    """Even on their own saga, users may not run operator actions or read metrics."""
    response = await _call(client, method, route.format(id=bobs_saga), bob)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


async def test_a_user_cannot_see_another_users_saga(
    client: httpx.AsyncClient, bobs_saga: str, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Alice gets 404 for bob's saga (as for one that does not exist) and never lists it."""
    theirs = await client.get(f"/sagas/{bobs_saga}", headers=alice)
    missing = await client.get("/sagas/00000000-0000-0000-0000-000000000000", headers=alice)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    listed = await client.get("/sagas", params={"limit": 200}, headers=alice)
    assert bobs_saga not in [item["id"] for item in listed.json()["items"]]
    spoofed = await client.get("/sagas", params={"started_by": "bob"}, headers=alice)
    assert spoofed.status_code == 403
    assert spoofed.json()["error"]["code"] == "forbidden"
    own = await client.get(f"/sagas/{bobs_saga}", headers=bob)
    assert own.status_code == 200


async def test_a_user_cannot_see_or_change_another_users_device_apps(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """A device id that is not yours: 404 on its applications, whatever the method."""
    device = "00000000-0000-0000-0000-00000000d0e5"
    for method, path in [
        ("GET", f"/devices/{device}/apps"),
        ("POST", f"/devices/{device}/apps"),
        ("DELETE", f"/devices/{device}/apps/com.example.notes"),
    ]:
        body = {"app_id": "x"} if method == "POST" else None
        response = await client.request(method, path, headers=alice, json=body)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == "not_found"


async def test_admins_see_everyones_sagas(
    client: httpx.AsyncClient, bobs_saga: str, admin: dict[str, str]
) -> None:
    """Admins read any run and can filter the list by user."""
    assert (await client.get(f"/sagas/{bobs_saga}", headers=admin)).status_code == 200
    listed = await client.get("/sagas", params={"started_by": "bob"}, headers=admin)
    assert bobs_saga in [item["id"] for item in listed.json()["items"]]


async def test_the_probes_need_no_token(client: httpx.AsyncClient) -> None:
    """Liveness and readiness are open (load balancers call them), and say nothing else."""
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()) == {"status", "database", "worker"}


async def test_unknown_routes_and_methods_are_json_errors(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """404 and 405 come in the platform's error shape."""
    missing = await client.get("/nowhere", headers=alice)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await client.delete("/sagas", headers=alice)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_malformed_bodies_are_422_not_500(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """Broken JSON, wrong types, unknown fields: 422 with details."""
    broken = await client.post(
        "/demo", content=b"{not json", headers={**alice, "Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "invalid_request"
    undecodable = await client.post(
        "/demo", content=b"\xff\xfe{", headers={**alice, "Content-Type": "application/json"}
    )
    assert undecodable.status_code == 422
    assert undecodable.json()["error"]["code"] == "invalid_request"
    typed = await client.post("/demo", json={"work_ms": "slow"}, headers=alice)
    assert typed.status_code == 422
    assert typed.json()["error"]["details"][0]["loc"] == ["body", "work_ms"]
    extra = await client.post("/demo", json={"surprise": 1}, headers=alice)
    assert extra.status_code == 422
    naive = await client.get(
        "/sagas", params={"created_after": "2024-01-01T00:00:00"}, headers=alice
    )
    assert naive.status_code == 422
    overflow = await client.get(
        "/sagas", params={"created_after": "9999-12-31T23:59:59-23:59"}, headers=alice
    )
    assert overflow.status_code == 422
    bad_key = await client.post("/demo", json={}, headers={**alice, "Idempotency-Key": "a b"})
    assert bad_key.status_code == 422
