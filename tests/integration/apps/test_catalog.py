"""The owner model over HTTP: private uploads, the catalog, publish/unpublish, scopes, deletes.

Runs on SQLite and PostgreSQL with the filesystem store only: who may see or change a record
is decided before storage is touched (the stores have their own tests).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.apps.storage.base import ObjectStorage
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.domain import Principal, Role
from cloudphone.saga.testing import FaultInjector
from tests.support.apps_harness import Apps, MakeApps, apk, package_for
from tests.support.apps_http import apps_client, headers

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Person:
    """One caller, for the service (``principal``) and over HTTP (``auth``)."""

    principal: Principal
    auth: dict[str, str]


def person(name: str, role: Role = Role.USER) -> Person:
    return Person(Principal(name, role), headers(name, role))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[ObjectStorage]:
    store = FilesystemStorage(tmp_path / "objects")
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def client(apps: Apps, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with apps_client(apps, tmp_path / "var") as http:
        yield http


@pytest.fixture
def alice(unique: str) -> Person:
    return person(f"alice-{unique}")


@pytest.fixture
def bob(unique: str) -> Person:
    return person(f"bob-{unique}")


@pytest.fixture
def admin(unique: str) -> Person:
    return person(f"admin-{unique}", Role.ADMIN)


async def uploaded(apps: Apps, who: Person, package: str, version: int) -> str:
    """Upload ``package`` at ``version`` as ``who`` and wait until it is AVAILABLE; its id."""
    _run, app = await apps.upload_and_wait(who.principal, apk(package, version))
    assert app is not None
    assert app.status == "AVAILABLE", app
    return app.id


async def publish(client: httpx.AsyncClient, who: Person, app_id: str) -> httpx.Response:
    return await client.post(f"/apps/{app_id}/publish", headers=who.auth)


async def unpublish(client: httpx.AsyncClient, who: Person, app_id: str) -> httpx.Response:
    return await client.post(f"/apps/{app_id}/unpublish", headers=who.auth)


async def listed(
    client: httpx.AsyncClient, who: Person, packages: list[str], **params: Any
) -> list[str]:
    """Ids ``who`` lists (``params`` as query parameters), one query per package, in order."""
    ids: list[str] = []
    for package in packages:
        response = await client.get(
            "/apps", params={"package": package, **params}, headers=who.auth
        )
        assert response.status_code == 200, response.text
        ids += [item["id"] for item in response.json()["items"]]
    return ids


async def test_an_upload_is_private_until_an_admin_publishes_it(
    apps: Apps, client: httpx.AsyncClient, alice: Person, bob: Person, admin: Person, package: str
) -> None:
    """Strangers get the 404 of an unknown id; once published everyone reads and downloads."""
    app_id = await uploaded(apps, alice, package, 1)
    unknown = await client.get(f"/apps/{UNKNOWN}", headers=bob.auth)
    for path in (f"/apps/{app_id}", f"/apps/{app_id}/download"):
        hidden = await client.get(path, headers=bob.auth)
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert await listed(client, bob, [package]) == []
    mine = (await client.get(f"/apps/{app_id}", headers=alice.auth)).json()
    assert (mine["in_catalog"], mine["published_at"], mine["published_by"]) == (False, None, None)
    assert (await client.get(f"/apps/{app_id}", headers=admin.auth)).status_code == 200

    published = await publish(client, admin, app_id)
    assert published.status_code == 200, published.text
    body = published.json()
    assert (body["in_catalog"], body["published_by"], body["is_latest"]) == (
        True,
        admin.principal.user_id,
        True,
    )
    assert body["published_at"] is not None
    assert (await client.get(f"/apps/{app_id}", headers=bob.auth)).status_code == 200
    download = await client.get(f"/apps/{app_id}/download", headers=bob.auth)
    assert download.status_code == 200
    assert download.content == apk(package, 1)
    assert await listed(client, bob, [package]) == [app_id]

    assert (await unpublish(client, admin, app_id)).status_code == 200
    assert (await client.get(f"/apps/{app_id}", headers=bob.auth)).status_code == 404
    assert await listed(client, bob, [package]) == []
    assert (await client.get(f"/apps/{app_id}", headers=alice.auth)).json()["in_catalog"] is False


async def test_publish_and_unpublish_are_admin_only_and_idempotent(
    apps: Apps, client: httpx.AsyncClient, alice: Person, admin: Person, unique: str, package: str
) -> None:
    """Users get 403 even on their own upload; repeats answer 200 and keep the first publisher."""
    app_id = await uploaded(apps, alice, package, 1)
    for action in (publish, unpublish):
        refused = await action(client, alice, app_id)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
    never = await unpublish(client, admin, app_id)
    assert never.status_code == 200, never.text
    assert (await client.get(f"/apps/{app_id}", headers=alice.auth)).json() == never.json()

    first = await publish(client, admin, app_id)
    again = await publish(client, person(f"other-admin-{unique}", Role.ADMIN), app_id)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.json()["published_by"] == admin.principal.user_id
    for action in (publish, unpublish):
        missing = await action(client, admin, UNKNOWN)
        assert missing.status_code == 404, missing.text


async def test_only_an_available_app_can_be_published(
    make_apps: MakeApps, tmp_path: Path, alice: Person, admin: Person, package: str
) -> None:
    """UPLOADING, FAILED and DELETED records answer 409 not_available and stay private."""
    faults = FaultInjector()
    faults.fail("UPLOAD_TO_STORAGE", times=None)
    apps = await make_apps(hooks=faults)
    async with apps_client(apps, tmp_path / "var") as client:
        accepted = await apps.upload(alice.principal, apk(package, 1))  # no worker yet
        app_id = accepted.application.id
        states = []
        for _round in ("uploading", "failed"):
            refused = await publish(client, admin, app_id)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "not_available"
            record = await apps.record(app_id)
            assert record is not None
            states.append((record.status.value, record.published_at))
            async with apps.engine.worker():
                await apps.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
        assert states == [("UPLOADING", None), ("FAILED", None)]
        deleted = await client.delete(f"/apps/{app_id}", headers=admin.auth)
        assert deleted.status_code == 200, deleted.text
        refused = await publish(client, admin, app_id)
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "not_available")


async def test_list_scopes_mine_catalog_all_and_the_default(
    apps: Apps,
    client: httpx.AsyncClient,
    alice: Person,
    bob: Person,
    admin: Person,
    unique: str,
) -> None:
    """Default for a user: their own uploads plus the catalog; ``all`` is for admins only."""
    p, q = package_for(unique, "p"), package_for(unique, "q")
    p1, p2 = await uploaded(apps, alice, p, 1), await uploaded(apps, alice, p, 2)
    q1, q2 = await uploaded(apps, bob, q, 1), await uploaded(apps, bob, q, 2)
    for app_id in (p1, q1):
        assert (await publish(client, admin, app_id)).status_code == 200
    both = [p, q]
    assert await listed(client, alice, both) == [p2, p1, q1]
    assert await listed(client, alice, both, scope="mine") == [p2, p1]
    assert await listed(client, alice, both, scope="catalog") == [p1, q1]
    assert await listed(client, bob, both) == [p1, q2, q1]
    assert await listed(client, admin, both) == [p2, p1, q2, q1]
    assert await listed(client, admin, both, scope="all") == [p2, p1, q2, q1]
    assert await listed(client, admin, both, scope="catalog") == [p1, q1]
    assert await listed(client, admin, both, scope="mine") == []
    everyone = await client.get("/apps", params={"scope": "all"}, headers=alice.auth)
    assert everyone.status_code == 403, everyone.text
    assert "admin" in everyone.json()["error"]["message"]
    typo = await client.get("/apps", params={"scope": "everything"}, headers=admin.auth)
    assert typo.status_code == 422


async def test_latest_is_the_newest_version_in_the_scope(
    apps: Apps, client: httpx.AsyncClient, alice: Person, bob: Person, admin: Person, package: str
) -> None:
    """A private v3 is alice's latest, never the catalog's, and does not show through it."""
    v1, v2, v3 = [await uploaded(apps, alice, package, v) for v in (1, 2, 3)]
    for app_id in (v2, v1):  # the order of publishing does not matter
        assert (await publish(client, admin, app_id)).status_code == 200
    assert await listed(client, bob, [package], latest=True) == [v2]
    assert await listed(client, bob, [package], latest=True, scope="catalog") == [v2]
    assert await listed(client, alice, [package], latest=True) == [v3]
    assert await listed(client, alice, [package], latest=True, scope="mine") == [v3]
    assert await listed(client, alice, [package], latest=True, scope="catalog") == [v2]
    assert await listed(client, admin, [package], latest=True, scope="all") == [v3]
    seen = {i: (await client.get(f"/apps/{i}", headers=alice.auth)).json() for i in (v1, v2, v3)}
    assert [seen[i]["is_latest"] for i in (v1, v2, v3)] == [False, True, False]

    assert (await unpublish(client, admin, v2)).status_code == 200
    assert await listed(client, bob, [package], latest=True) == [v1]
    assert (await client.get(f"/apps/{v1}", headers=bob.auth)).json()["is_latest"] is True
    assert await listed(client, alice, [package], latest=True, scope="catalog") == [v1]


async def test_an_uploader_deletes_their_own_upload_until_it_is_published(
    apps: Apps, client: httpx.AsyncClient, alice: Person, admin: Person, package: str
) -> None:
    """409 ``published`` names the way out: an admin unpublishes, then the delete works."""
    private, public = (
        await uploaded(apps, alice, package, 1),
        await uploaded(apps, alice, package, 2),
    )
    gone = await client.delete(f"/apps/{private}", headers=alice.auth)
    assert gone.status_code == 200, gone.text
    assert gone.json()["status"] == "DELETED"
    record = await apps.record(private)
    assert record is not None
    assert await apps.storage.stat(record.object_key) is None
    assert (await client.get(f"/apps/{private}", headers=alice.auth)).status_code == 404

    assert (await publish(client, admin, public)).status_code == 200
    refused = await client.delete(f"/apps/{public}", headers=alice.auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "published"
    assert "unpublish" in refused.json()["error"]["message"]
    kept = await apps.record(public)
    assert kept is not None
    assert (kept.status.value, kept.is_latest) == ("AVAILABLE", True)
    assert await apps.storage.stat(kept.object_key) is not None
    assert (await unpublish(client, admin, public)).status_code == 200
    assert (await client.delete(f"/apps/{public}", headers=alice.auth)).status_code == 200


async def test_strangers_get_404_for_private_uploads_and_403_for_catalog_ones(
    make_apps: MakeApps, tmp_path: Path, alice: Person, bob: Person, admin: Person, package: str
) -> None:
    """Even an upload still in progress is "not found" to a stranger, not "in progress"."""
    apps = await make_apps()
    async with apps_client(apps, tmp_path / "var") as client:
        uploading = (await apps.upload(alice.principal, apk(package, 9))).application.id
        hidden = await client.delete(f"/apps/{uploading}", headers=bob.auth)
        assert hidden.status_code == 404, hidden.text
        in_progress = await client.delete(f"/apps/{uploading}", headers=alice.auth)
        assert (in_progress.status_code, in_progress.json()["error"]["code"]) == (
            409,
            "upload_in_progress",
        )
        async with apps.engine.worker():
            private, public = [await uploaded(apps, alice, package, v) for v in (1, 2)]
        assert (await publish(client, admin, public)).status_code == 200
        hidden = await client.delete(f"/apps/{private}", headers=bob.auth)
        assert hidden.status_code == 404, hidden.text
        refused = await client.delete(f"/apps/{public}", headers=bob.auth)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        records = [await apps.record(i) for i in (private, public)]
        assert [r.status.value for r in records if r is not None] == ["AVAILABLE", "AVAILABLE"]


async def test_an_admin_deletes_a_published_app_and_the_catalog_moves_down(
    apps: Apps, client: httpx.AsyncClient, alice: Person, bob: Person, admin: Person, package: str
) -> None:
    v1, v2 = await uploaded(apps, alice, package, 1), await uploaded(apps, alice, package, 2)
    for app_id in (v1, v2):
        assert (await publish(client, admin, app_id)).status_code == 200
    deleted = await client.delete(f"/apps/{v2}", headers=admin.auth)
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["status"], deleted.json()["in_catalog"]) == ("DELETED", False)
    assert (await client.get(f"/apps/{v2}", headers=bob.auth)).status_code == 404
    assert await listed(client, bob, [package], latest=True) == [v1]
    refused = await publish(client, admin, v2)
    assert refused.status_code == 409


async def test_publishing_is_logged_with_the_admin_who_did_it(
    apps: Apps,
    client: httpx.AsyncClient,
    alice: Person,
    admin: Person,
    package: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line per change (repeats change nothing and log nothing), naming app and admin."""
    app_id = await uploaded(apps, alice, package, 1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cloudphone.apps"):
        for action in (publish, publish, unpublish, unpublish):
            assert (await action(client, admin, app_id)).status_code == 200
        assert (await client.delete(f"/apps/{app_id}", headers=alice.auth)).status_code == 200
    acts = [
        (r.getMessage(), getattr(r, "app_id", None), getattr(r, "by", None))
        for r in caplog.records
        if r.name == "cloudphone.apps"
    ]
    assert acts == [
        ("application published", app_id, admin.principal.user_id),
        ("application unpublished", app_id, admin.principal.user_id),
        ("application deleted", app_id, alice.principal.user_id),
    ]


async def test_the_openapi_document_describes_scopes_and_publishing(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    listing = spec["paths"]["/apps"]["get"]
    scope = next(p for p in listing["parameters"] if p["name"] == "scope")
    assert "mine" in scope["description"]
    assert "Omitted" in scope["description"]
    assert "403" in listing["responses"]
    for action, codes in (("publish", {"403", "404", "409"}), ("unpublish", {"403", "404"})):
        operation = spec["paths"][f"/apps/{{app_id}}/{action}"]["post"]
        assert codes <= set(operation["responses"]), operation["responses"]
    delete = spec["paths"]["/apps/{app_id}"]["delete"]
    assert "(admin)" not in delete["summary"]
    assert "published" in delete["description"]
