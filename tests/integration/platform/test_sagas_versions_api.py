"""Versions and forks over HTTP, on SQLite and PostgreSQL: orphans, migrate, fork (admins)."""

from __future__ import annotations

import httpx
import pytest

from cloudphone.domain import Role
from cloudphone.platform import Platform
from tests.support.http import saga_until, start_demo
from tests.support.sagas import insert_pinned
from tests.support.server import auth


async def orphan_of_demo(platform: Platform, version: int, started_by: str) -> str:
    """A demo run pinned to a version nobody registered (a deploy that has gone)."""
    return await insert_pinned(platform.engine, "demo", "PREPARE", version, started_by)


@pytest.mark.leaves_runs("its orphan: demo version 9, which no worker registers")
async def test_runs_show_their_version_and_orphans_are_listed(
    api: httpx.AsyncClient, platform: Platform, unique: str
) -> None:
    user, admin = auth(f"u-{unique}"), auth(f"ops-{unique}", Role.ADMIN)
    done = await saga_until(api, user, await start_demo(api, user))
    assert (done["saga_version"], done["forked_from"]) == (1, None)
    orphan = await orphan_of_demo(platform, 9, f"u-{unique}")
    # Other tests share the PostgreSQL database (and may leave runs behind): this user's only.
    only = {"orphaned": "true", "started_by": f"u-{unique}"}
    listed = await api.get("/sagas", params=only, headers=admin)
    assert listed.status_code == 200, listed.text
    assert [(r["id"], r["saga_version"]) for r in listed.json()["items"]] == [(orphan, 9)]
    mine = await api.get("/sagas", params={"orphaned": True}, headers=user)
    assert [r["id"] for r in mine.json()["items"]] == [orphan], "users see their own orphans"
    other = await api.get("/sagas", params={"orphaned": True}, headers=auth(f"x-{unique}"))
    assert other.json()["items"] == []


async def test_an_admin_migrates_an_orphan_to_the_version_the_workers_have(
    api: httpx.AsyncClient, platform: Platform, unique: str
) -> None:
    admin = auth(f"ops-{unique}", Role.ADMIN)
    orphan = await orphan_of_demo(platform, 2, f"u-{unique}")
    url = f"/sagas/{orphan}/migrate"
    refused = await api.post(url, json={"to_version": 1}, headers=auth(f"u-{unique}"))
    assert refused.status_code == 403
    unknown = await api.post(url, json={"to_version": 5}, headers=admin)
    assert unknown.status_code == 409
    assert unknown.json()["error"]["code"] == "operator_action_rejected"
    assert "version 5 of demo is not registered here" in unknown.json()["error"]["message"]
    moved = await api.post(url, json={"to_version": 1, "note": "v2 rolled back"}, headers=admin)
    assert moved.status_code == 200, moved.text
    assert moved.json()["saga_version"] == 1
    detail = await saga_until(api, admin, orphan)
    assert (detail["status"], detail["saga_version"]) == ("COMPLETED", 1)
    (event,) = [e for e in detail["history"] if e["kind"] == "operator_migrated"]
    assert event["detail"] == {
        "actor": f"ops-{unique}",
        "note": "v2 rolled back",
        "from_version": 2,
        "to_version": 1,
    }
    missing = await api.post("/sagas/nope/migrate", json={"to_version": 1}, headers=admin)
    assert missing.status_code == 404


async def test_an_admin_forks_a_finished_run_and_both_link_to_each_other(
    api: httpx.AsyncClient, unique: str
) -> None:
    user, admin = auth(f"u-{unique}"), auth(f"ops-{unique}", Role.ADMIN)
    original = await start_demo(api, user)
    await saga_until(api, user, original)
    url = f"/sagas/{original}/fork"
    assert (await api.post(url, json={"from_step": "NOTIFY"}, headers=user)).status_code == 403
    across = await api.post(url, json={"from_step": "PREPARE"}, headers=admin)
    assert across.status_code == 409
    assert "not after the pivot COMMIT" in across.json()["error"]["message"]
    unknown = await api.post(url, json={"from_step": "NOPE"}, headers=admin)
    assert unknown.status_code == 409
    forked = await api.post(
        url, json={"from_step": "NOTIFY", "note": "resend the notice"}, headers=admin
    )
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert forked.headers["location"] == f"/sagas/{fork['id']}"
    assert (fork["forked_from"], fork["started_by"]) == (original, f"ops-{unique}")
    done = await saga_until(api, admin, fork["id"])
    assert done["status"] == "COMPLETED"
    assert done["history"][0]["detail"]["forked_from"] == original
    assert [e["step"] for e in done["history"] if e["kind"] == "step_succeeded"] == ["NOTIFY"]
    back = (await api.get(f"/sagas/{original}", headers=admin)).json()
    assert back["history"][-1]["kind"] == "run_forked"
    assert back["history"][-1]["detail"]["fork"] == fork["id"]
    forks = await api.get("/sagas", params={"forked_from": original}, headers=admin)
    assert [r["id"] for r in forks.json()["items"]] == [fork["id"]]
    forced = await api.post(url, json={"from_step": "PREPARE", "force": True}, headers=admin)
    assert forced.status_code == 201, forced.text
    again = await saga_until(api, admin, forced.json()["id"])
    assert again["history"][0]["detail"]["forced"] is True


async def test_an_unfinished_run_cannot_be_forked(api: httpx.AsyncClient, unique: str) -> None:
    admin = auth(f"ops-{unique}", Role.ADMIN)
    slow = await start_demo(api, auth(f"u-{unique}"), work_ms=2000)
    answer = await api.post(f"/sagas/{slow}/fork", json={"from_step": "PREPARE"}, headers=admin)
    assert answer.status_code == 409
    assert "only a finished run can be forked" in answer.json()["error"]["message"]


async def test_a_list_filter_given_twice_is_refused(api: httpx.AsyncClient, unique: str) -> None:
    """FastAPI would keep the last value: refused instead, naming the parameter."""
    answer = await api.get("/sagas?orphaned=true&orphaned=false", headers=auth(f"u-{unique}"))
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == "query.orphaned: given more than once"
