"""The console's apps pages over a real platform: scopes, versions, publish, download."""

from __future__ import annotations

from datetime import timedelta

from cloudphone.apps.models import Application
from cloudphone.domain import Principal, Role
from cloudphone.platform import Platform
from cloudphone.saga import SagaStatus
from tests.integration.console.conftest import Browser
from tests.support.apps_harness import apk, chunks_of, sha256
from tests.support.console import elements

ADMIN = Principal("root", Role.ADMIN)


async def uploaded(platform: Platform, user: str, package: str, version_code: int) -> Application:
    """Upload an APK as ``user`` and wait until its saga stored it."""
    accepted = await platform.apps.upload_app(
        Principal(user), chunks_of(apk(package, version_code, version_name=f"{version_code}.0"))
    )
    run = await platform.engine.wait(accepted.saga_id, timeout=timedelta(seconds=20))
    assert run.status is SagaStatus.COMPLETED
    return await platform.apps.get_app(Principal(user), accepted.application.id)


def app_rows(html: str) -> dict[str, str]:
    """``data-app-id`` → ``data-published`` of every row of the apps table."""
    return {
        str(e.attrs["data-app-id"]): str(e.attrs["data-published"])
        for e in elements(html, "data-app-id")
        if e.tag == "tr"
    }


async def test_the_scopes_are_those_of_the_api(platform: Platform, browser: Browser) -> None:
    """A user sees their uploads and the catalog, never another's private upload; admins all."""
    mine = await uploaded(platform, "alice", "com.example.mine", 1)
    private = await uploaded(platform, "bob", "com.example.private", 1)
    shared = await uploaded(platform, "bob", "com.example.shared", 1)
    await platform.apps.publish_app(ADMIN, shared.id)
    alice, _ = await browser("alice")
    visible = (await alice.get("/ui/apps")).text
    assert app_rows(visible) == {mine.id: "false", shared.id: "true"}
    assert elements(visible, "data-saga-link", mine.saga_id)
    assert not elements(visible, "data-saga-link", shared.saga_id)  # Bob's run: a 404 to her
    assert set(app_rows((await alice.get("/ui/apps", params={"scope": "mine"})).text)) == {mine.id}
    assert set(app_rows((await alice.get("/ui/apps", params={"scope": "catalog"})).text)) == {
        shared.id
    }
    everything = (await alice.get("/ui/apps", params={"scope": "all"})).text
    assert "needs the admin role" in everything
    assert set(app_rows(everything)) == {mine.id, shared.id}
    assert (await alice.get(f"/ui/apps/{private.id}")).status_code == 404
    theirs = await alice.get(f"/ui/apps/{shared.id}")
    assert theirs.status_code == 200
    assert not elements(theirs.text, "data-saga-link")
    admin, _ = await browser("root", Role.ADMIN)
    every = (await admin.get("/ui/apps", params={"scope": "all"})).text
    assert set(app_rows(every)) == {mine.id, private.id, shared.id}
    fragment = await admin.get("/ui/apps", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="app-rows"')


async def test_versions_are_grouped_per_package_with_the_latest_marked(
    platform: Platform, browser: Browser
) -> None:
    """Two published versions: one group, the higher one latest; the page lists both."""
    one = await uploaded(platform, "carol", "com.example.versions", 1)
    two = await uploaded(platform, "carol", "com.example.versions", 2)
    for app in (one, two):
        await platform.apps.publish_app(ADMIN, app.id)
    carol, _ = await browser("carol")
    page = (await carol.get("/ui/apps", params={"package": "com.example.versions"})).text
    assert list(app_rows(page)) == [two.id, one.id]
    assert elements(page, "data-package", "com.example.versions")
    assert elements(page, "data-latest", two.id)
    latest_only = await carol.get("/ui/apps", params={"scope": "catalog", "latest": "1"})
    assert list(app_rows(latest_only.text)) == [two.id]
    detail = (await carol.get(f"/ui/apps/{one.id}")).text
    assert list(app_rows(detail)) == [two.id, one.id]
    assert one.sha256 in detail
    assert elements(detail, "data-copy", one.sha256)
    assert elements(detail, "data-saga-link", one.saga_id)
    assert "published by <b>root</b>" in detail


async def test_an_admin_publishes_and_unpublishes_in_place(
    platform: Platform, browser: Browser
) -> None:
    """Confirmed, CSRF-checked, answered with the page's live part; others then see it."""
    app = await uploaded(platform, "dora", "com.example.publish", 7)
    admin, csrf = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/apps/{app.id}")).text
    assert {e.attrs["data-action"] for e in elements(page, "data-action")} == {"publish"}
    assert elements(page, "data-confirm", "publish")
    forged = await admin.post(f"/ui/apps/{app.id}/publish")
    assert forged.status_code == 403
    assert (await platform.apps.get_app(ADMIN, app.id)).published_at is None
    done = await admin.post(f"/ui/apps/{app.id}/publish", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200
    assert done.text.lstrip().startswith('<div id="app-live"')
    assert elements(done.text, "data-result", "ok")
    assert elements(done.text, "data-app-id", app.id)[0].attrs["data-published"] == "true"
    assert elements(done.text, "data-action", "unpublish")
    eve, _ = await browser("eve")
    catalog = (await eve.get("/ui/apps", params={"scope": "catalog"})).text
    assert app_rows(catalog) == {app.id: "true"}
    back = await admin.post(f"/ui/apps/{app.id}/unpublish", data={"csrf_token": csrf})
    assert back.status_code == 200
    assert elements(back.text, "data-app-id", app.id)[0].attrs["data-published"] == "false"
    assert app_rows((await eve.get("/ui/apps", params={"scope": "catalog"})).text) == {}
    unknown = await admin.post(f"/ui/apps/{app.id}/delete", headers={"X-CSRF-Token": csrf})
    assert unknown.status_code == 404


async def test_publish_is_hidden_from_users_refused_to_them_and_to_unavailable_apps(
    platform: Platform, browser: Browser
) -> None:
    """No button for the uploader; their POST is a 403; a DELETED version is a 409 with why."""
    app = await uploaded(platform, "fred", "com.example.refused", 1)
    fred, csrf = await browser("fred")
    page = (await fred.get(f"/ui/apps/{app.id}")).text
    assert not elements(page, "data-action")
    assert not elements(page, "data-confirm")
    refused = await fred.post(f"/ui/apps/{app.id}/publish", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403
    await platform.apps.delete_app(Principal("fred"), app.id)
    admin, admin_csrf = await browser("root", Role.ADMIN)
    gone = (await admin.get(f"/ui/apps/{app.id}")).text
    assert elements(gone, "data-empty", "actions")
    conflict = await admin.post(f"/ui/apps/{app.id}/publish", headers={"X-CSRF-Token": admin_csrf})
    assert conflict.status_code == 409
    assert elements(conflict.text, "data-result", "error")
    assert "only an AVAILABLE application can be published" in conflict.text


async def test_a_user_downloads_their_app_and_nobody_else_does(
    platform: Platform, browser: Browser
) -> None:
    """The console streams the APK to its uploader; a stranger gets 404, a DELETED one 409."""
    app = await uploaded(platform, "gina", "com.example.download", 3)
    gina, _ = await browser("gina")
    page = (await gina.get(f"/ui/apps/{app.id}")).text
    assert elements(page, "data-download", app.id)
    answer = await gina.get(f"/ui/apps/{app.id}/download")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.android.package-archive"
    assert app.download_name in answer.headers["content-disposition"]
    assert sha256(answer.content) == app.sha256
    hal, _ = await browser("hal")
    assert (await hal.get(f"/ui/apps/{app.id}/download")).status_code == 404
    await platform.apps.delete_app(Principal("gina"), app.id)
    admin, _ = await browser("root", Role.ADMIN)
    deleted = await admin.get(f"/ui/apps/{app.id}/download")
    assert deleted.status_code == 409
    assert "DELETED" in deleted.text
    assert not elements((await admin.get(f"/ui/apps/{app.id}")).text, "data-download")


async def test_the_apps_list_has_empty_states(platform: Platform, browser: Browser) -> None:
    """No app yet, or none matching: the list says which, instead of an empty table."""
    ivy, _ = await browser("ivy")
    nothing = (await ivy.get("/ui/apps")).text
    assert elements(nothing, "data-empty", "apps")
    assert "No application yet" in nothing
    await uploaded(platform, "ivy", "com.example.empty", 1)
    filtered = (await ivy.get("/ui/apps", params={"status": "FAILED"})).text
    assert elements(filtered, "data-empty", "apps")
    assert "matches these filters" in filtered
    bad = (await ivy.get("/ui/apps", params={"status": "shiny", "scope": "nobody"})).text
    assert "unknown status" in bad
    assert "unknown scope" in bad


async def test_an_upload_saga_links_to_its_app(platform: Platform, browser: Browser) -> None:
    """The app_upload saga's page links the app's page; searching the app id links it too."""
    app = await uploaded(platform, "jill", "com.example.linked", 1)
    jill, _ = await browser("jill")
    saga = (await jill.get(f"/ui/sagas/{app.saga_id}")).text
    assert elements(saga, "data-resource", "app")[0].attrs["href"] == f"/ui/apps/{app.id}"
    found = (await jill.get("/ui/sagas", params={"q": app.id})).text
    assert elements(found, "data-match-kind", "app")[0].attrs["href"] == f"/ui/apps/{app.id}"
    assert elements(found, "data-saga-id", app.saga_id)
