"""The console's saga pages over a real platform: counts, lists, search, detail, actions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cloudphone.domain import Principal, Role
from cloudphone.platform import Platform
from cloudphone.saga import SagaStatus
from tests.integration.console.conftest import Browser
from tests.support.console import elements, saga_rows
from tests.support.devices_stack import SMALL


async def demo(platform: Platform, user: str, **data: object) -> str:
    """Start a demo saga as ``user`` and wait until it ends."""
    saga_id = await platform.engine.start("demo", dict(data), started_by=user)
    await platform.engine.wait(saga_id, timeout=timedelta(seconds=20))
    return saga_id


def counts(html: str) -> dict[str, int]:
    """The overview's ``data-count-status`` → ``data-count``."""
    return {
        str(e.attrs["data-count-status"]): int(str(e.attrs["data-count"]))
        for e in elements(html, "data-count-status")
    }


async def test_the_overview_counts_equal_the_engines(platform: Platform, browser: Browser) -> None:
    """Per-status counts on the overview are the engine's; users count only their own runs."""
    for _ in range(2):
        await demo(platform, "alice")
    await demo(platform, "alice", fail_step="NOTIFY")
    await demo(platform, "bob", fail_step="PREPARE")
    admin, _ = await browser("root", Role.ADMIN)
    page = (await admin.get("/ui/")).text
    assert counts(page)["COMPLETED"] == 2
    assert counts(page)["FAILED"] == 1
    assert counts(page)["COMPENSATED"] == 1
    for status in SagaStatus:
        assert counts(page)[status.value] == len(await platform.engine.list(status=status))
    assert elements(page, "data-attention-failed", "1")
    alice, _ = await browser("alice")
    mine = counts((await alice.get("/ui/")).text)
    assert (mine["COMPLETED"], mine["FAILED"], mine["COMPENSATED"]) == (2, 1, 0)


async def test_an_empty_platform_shows_empty_states(browser: Browser) -> None:
    """Nothing ran: the overview and the list say so instead of showing empty tables."""
    admin, _ = await browser("root", Role.ADMIN)
    overview = (await admin.get("/ui/")).text
    assert elements(overview, "data-empty", "attention")
    assert elements(overview, "data-empty", "counts")
    assert elements(overview, "data-empty", "durations")
    listing = (await admin.get("/ui/sagas")).text
    assert elements(listing, "data-empty", "sagas")
    filtered = (await admin.get("/ui/sagas", params={"status": "nonsense"})).text
    assert "unknown status" in filtered


async def test_the_list_filters_by_status_type_and_user(
    platform: Platform, browser: Browser
) -> None:
    """Each filter narrows the rows; htmx refreshes get the rows alone."""
    done = await demo(platform, "alice")
    failed = await demo(platform, "bob", fail_step="NOTIFY")
    admin, _ = await browser("root", Role.ADMIN)
    everything = saga_rows((await admin.get("/ui/sagas")).text)
    assert everything == {done: "COMPLETED", failed: "FAILED"}
    only_failed = await admin.get("/ui/sagas", params={"status": "FAILED"})
    assert saga_rows(only_failed.text) == {failed: "FAILED"}
    assert saga_rows((await admin.get("/ui/sagas", params={"started_by": "alice"})).text) == {
        done: "COMPLETED"
    }
    assert saga_rows((await admin.get("/ui/sagas", params={"type": "device_create"})).text) == {}
    assert saga_rows((await admin.get("/ui/sagas", params={"needs_attention": "1"})).text) == {
        failed: "FAILED"
    }
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert saga_rows((await admin.get("/ui/sagas", params={"after": future})).text) == {}
    assert len(saga_rows((await admin.get("/ui/sagas", params={"range": "15m"})).text)) == 2
    rows = await admin.get("/ui/sagas", params={"status": "FAILED"}, headers={"HX-Request": "true"})
    assert rows.text.lstrip().startswith('<section id="saga-rows"')
    assert "<html" not in rows.text


async def test_the_list_pages_through_runs(platform: Platform, browser: Browser) -> None:
    """51 runs make two pages; the second page holds the oldest run."""
    first = await platform.engine.start("demo", {}, started_by="pager")
    for _ in range(50):
        await platform.engine.start("demo", {}, started_by="pager")
    admin, _ = await browser("root", Role.ADMIN)
    page = (await admin.get("/ui/sagas", params={"started_by": "pager"})).text
    assert len(saga_rows(page)) == 50
    older = elements(page, "data-page", "older")
    assert older
    second = (await admin.get(str(older[0].attrs["href"]).removeprefix("http://x"))).text
    assert list(saga_rows(second)) == [first]


async def test_search_finds_a_run_by_its_id_or_by_a_business_id(
    platform: Platform, browser: Browser
) -> None:
    """A saga id finds that run; a device id finds the device's creation saga."""
    done = await demo(platform, "alice")
    creation = await platform.devices.create_device(Principal("alice"), "phone-1", SMALL)
    admin, _ = await browser("root", Role.ADMIN)
    by_id = (await admin.get("/ui/sagas", params={"q": done})).text
    assert set(saga_rows(by_id)) == {done}
    by_device = (await admin.get("/ui/sagas", params={"q": creation.device.id})).text
    assert set(saga_rows(by_device)) == {creation.saga_id}
    assert "a device (1 saga)" in by_device
    nothing = (await admin.get("/ui/sagas", params={"q": "no-such-id"})).text
    assert saga_rows(nothing) == {}
    assert elements(nothing, "data-empty", "sagas")
    bob, _ = await browser("bob")
    hidden = (await bob.get("/ui/sagas", params={"q": creation.device.id})).text
    assert saga_rows(hidden) == {}
    assert saga_rows((await bob.get("/ui/sagas", params={"q": done})).text) == {}


async def test_a_user_sees_only_their_own_runs_and_no_admin_action(
    platform: Platform, browser: Browser
) -> None:
    """Bob's list lacks Alice's run, her page is a 404 for him, and his own shows no buttons."""
    alices = await demo(platform, "alice", fail_step="NOTIFY")
    bobs = await demo(platform, "bob", fail_step="NOTIFY")
    bob, csrf = await browser("bob")
    assert set(saga_rows((await bob.get("/ui/sagas")).text)) == {bobs}
    assert (await bob.get(f"/ui/sagas/{alices}")).status_code == 404
    own = await bob.get(f"/ui/sagas/{bobs}")
    assert own.status_code == 200
    assert not elements(own.text, "data-action", "retry")
    assert not elements(own.text, "data-confirm")
    refused = await bob.post(f"/ui/sagas/{bobs}/retry", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert (await platform.engine.get(bobs)).status is SagaStatus.FAILED


async def test_the_detail_shows_the_plan_timeline_and_data_after_each_step(
    platform: Platform, browser: Browser
) -> None:
    """Every step in order with the pivot marked; every event; the data after each step."""
    saga_id = await demo(platform, "alice", fail_step="NOTIFY", message="hello")
    admin, _ = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/sagas/{saga_id}")).text
    steps = [
        (e.attrs["data-step"], e.attrs["data-step-state"]) for e in elements(page, "data-step")
    ]
    assert steps == [("PREPARE", "done"), ("COMMIT", "done"), ("NOTIFY", "failed")]
    assert "◆ pivot" in page
    events = [e.attrs["data-event-kind"] for e in elements(page, "data-event-kind")]
    assert [e.kind.value for e in reversed(await platform.engine.history(saga_id))] == events
    snapshots = [e.attrs["data-snapshot"] for e in elements(page, "data-snapshot")]
    assert snapshots == ["PREPARE", "COMMIT"]
    after_prepare = page[
        page.index('data-snapshot="PREPARE"') : page.index('data-snapshot="COMMIT"')
    ]
    assert "prepared_at" in after_prepare
    assert "committed_at" not in after_prepare
    offered = {e.attrs["data-action"] for e in elements(page, "data-action") if e.tag == "button"}
    assert offered == {"retry", "resolve", "fork"}


async def test_an_action_without_the_csrf_token_is_refused(
    platform: Platform, browser: Browser
) -> None:
    """A forged POST (session cookie, no CSRF token) changes nothing."""
    saga_id = await demo(platform, "alice", fail_step="NOTIFY")
    admin, _ = await browser("root", Role.ADMIN)
    forged = await admin.post(f"/ui/sagas/{saga_id}/resolve", data={"note": "forged"})
    assert forged.status_code == 403
    wrong = await admin.post(
        f"/ui/sagas/{saga_id}/resolve", data={"note": "x"}, headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status_code == 403
    run = await platform.engine.get(saga_id)
    assert run.resolution is None


async def test_resolve_needs_a_note_and_records_it(platform: Platform, browser: Browser) -> None:
    """Without a note: 422 and the reason in place; with one: resolved, the note in the timeline."""
    saga_id = await demo(platform, "alice", fail_step="NOTIFY")
    admin, csrf = await browser("root", Role.ADMIN)
    blank = await admin.post(
        f"/ui/sagas/{saga_id}/resolve", data={"note": "  "}, headers={"X-CSRF-Token": csrf}
    )
    assert blank.status_code == 422
    assert elements(blank.text, "data-result", "error")
    done = await admin.post(
        f"/ui/sagas/{saga_id}/resolve",
        data={"note": "refunded by hand", "csrf_token": csrf},
    )
    assert done.status_code == 200
    assert elements(done.text, "data-result", "ok")
    assert re.search(r"data-note>\s*refunded by hand", done.text)
    assert (await platform.engine.get(saga_id)).resolution == "refunded by hand"
    again = await admin.post(
        f"/ui/sagas/{saga_id}/resolve", data={"note": "twice"}, headers={"X-CSRF-Token": csrf}
    )
    assert again.status_code == 409
    assert "already resolved" in again.text


async def test_a_refused_action_shows_the_engines_reason(
    platform: Platform, browser: Browser
) -> None:
    """Retrying a COMPLETED run is refused with the reason; an unknown action is a 404."""
    saga_id = await demo(platform, "alice")
    admin, csrf = await browser("root", Role.ADMIN)
    page = (await admin.get(f"/ui/sagas/{saga_id}")).text
    offered = {e.attrs["data-action"] for e in elements(page, "data-action") if e.tag == "button"}
    assert offered == {"fork"}, "a finished run can only be forked"
    refused = await admin.post(f"/ui/sagas/{saga_id}/retry", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 409
    assert "only FAILED sagas can be retried" in refused.text
    unknown = await admin.post(f"/ui/sagas/{saga_id}/rewind", headers={"X-CSRF-Token": csrf})
    assert unknown.status_code == 404


async def test_devices_and_quotas_pages(platform: Platform, browser: Browser) -> None:
    """Users see their own devices and quota; admins every user's quota."""
    creation = await platform.devices.create_device(Principal("alice"), "phone-1", SMALL)
    alice, _ = await browser("alice")
    devices = (await alice.get("/ui/devices")).text
    assert elements(devices, "data-device-id", creation.device.id)
    detail = await alice.get(f"/ui/devices/{creation.device.id}")
    assert detail.status_code == 200
    assert creation.saga_id in detail.text
    bob, _ = await browser("bob")
    assert not elements((await bob.get("/ui/devices")).text, "data-device-id")
    assert (await bob.get(f"/ui/devices/{creation.device.id}")).status_code == 404
    assert elements((await bob.get("/ui/quotas")).text, "data-quota", "bob")
    admin, _ = await browser("root", Role.ADMIN)
    quotas = (await admin.get("/ui/quotas")).text
    assert elements(quotas, "data-quota", "alice")
    assert elements(quotas, "data-usage", "devices")
