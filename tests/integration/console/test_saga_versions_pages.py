"""The console and saga versions: the version shown, orphans in the queue, the fork button."""

from __future__ import annotations

from datetime import timedelta

from cloudphone.domain import Role
from cloudphone.platform import Platform
from tests.integration.console.conftest import Browser
from tests.integration.console.test_saga_pages import demo
from tests.support.console import elements, saga_rows
from tests.support.sagas import insert_pinned


async def orphan(platform: Platform, user: str, version: int = 9) -> str:
    """A demo run pinned to a version no worker has (a deploy that has gone)."""
    return await insert_pinned(platform.engine, "demo", "PREPARE", version, user)


def attrs(html: str, attribute: str) -> list[str]:
    return [str(e.attrs[attribute]) for e in elements(html, attribute)]


async def test_runs_of_a_version_no_worker_has_are_in_the_needs_attention_queue(
    platform: Platform, browser: Browser
) -> None:
    done = await demo(platform, "alice")
    stuck = await orphan(platform, "alice")
    admin, _ = await browser("root", Role.ADMIN)
    overview = (await admin.get("/ui/")).text
    assert not elements(overview, "data-empty", "attention")
    queue = overview[overview.index('data-attention="orphaned"') :]
    assert saga_rows(queue[: queue.index("</table>")]) == {stuck: "PENDING"}
    assert elements(overview, "data-attention-orphaned", "1")
    listed = (await admin.get("/ui/sagas", params={"orphaned": "1"})).text
    assert saga_rows(listed) == {stuck: "PENDING"}
    everything = (await admin.get("/ui/sagas")).text
    assert set(saga_rows(everything)) == {done, stuck}
    assert sorted(attrs(everything, "data-saga-version")) == ["1", "9"]
    page = (await admin.get(f"/ui/sagas/{stuck}")).text
    assert elements(page, "data-orphaned")
    assert "not registered in this process" in page
    assert "does not have version 9 of demo" in page
    assert not elements((await admin.get(f"/ui/sagas/{done}")).text, "data-orphaned")
    bob, _ = await browser("bob")
    assert elements((await bob.get("/ui/")).text, "data-empty", "attention"), "alice's run"

    await platform.engine.migrate(stuck, 1, actor="root")
    await platform.engine.wait(stuck, timeout=timedelta(seconds=20))
    assert elements((await admin.get("/ui/")).text, "data-empty", "attention")
    moved = (await admin.get(f"/ui/sagas/{stuck}")).text
    assert elements(moved, "data-event-kind", "operator_migrated")
    assert "from version" in moved


async def test_the_fork_button_asks_for_a_step_and_links_the_runs_both_ways(
    platform: Platform, browser: Browser
) -> None:
    original = await demo(platform, "alice")
    admin, csrf = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/sagas/{original}")).text
    assert elements(page, "data-action", "fork")
    assert elements(page, "data-confirm-dialog", "fork")
    options = [str(e.attrs["value"]) for e in elements(page, "value") if e.tag == "option"]
    assert [o for o in options if o in {"PREPARE", "COMMIT", "NOTIFY"}] == [
        "PREPARE",
        "COMMIT",
        "NOTIFY",
    ]
    assert elements(page, "data-step-choice")
    assert elements(page, "data-force")
    url = f"/ui/sagas/{original}/fork"

    forged = await admin.post(url, data={"from_step": "NOTIFY"})
    assert forged.status_code == 403
    no_step = await admin.post(url, headers={"X-CSRF-Token": csrf})
    assert (no_step.status_code, "needs the step to start from" in no_step.text) == (422, True)
    across = await admin.post(url, data={"from_step": "PREPARE", "csrf_token": csrf})
    assert across.status_code == 409
    assert "not after the pivot COMMIT" in across.text
    assert await platform.engine.list(forked_from=original) == []

    forked = await admin.post(
        url, data={"from_step": "PREPARE", "force": "true", "note": "redo", "csrf_token": csrf}
    )
    assert forked.status_code == 200, forked.text
    assert elements(forked.text, "data-result", "ok")
    (fork,) = await platform.engine.list(forked_from=original)
    (link,) = elements(forked.text, "data-result-link")
    assert link.attrs["href"] == f"/ui/sagas/{fork.id}"
    assert attrs(forked.text, "data-fork") == [fork.id], "the original lists its fork"
    assert elements(forked.text, "data-event-kind", "run_forked")
    await platform.engine.wait(fork.id, timeout=timedelta(seconds=20))
    fork_page = (await admin.get(f"/ui/sagas/{fork.id}")).text
    assert attrs(fork_page, "data-forked-from") == [original]
    assert "forced" in fork_page
    alice, _ = await browser("alice")
    assert not elements((await alice.get(f"/ui/sagas/{original}")).text, "data-action")
