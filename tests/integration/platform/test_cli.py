"""The ``cloudphone`` command in process: tokens, db, sagas (table and --json), config."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cloudphone.api.auth import verify_token
from cloudphone.cli import app
from cloudphone.cli.config import flatten
from cloudphone.demo import DEMO_SAGA
from cloudphone.devices.config import DevicesConfig
from cloudphone.domain import Role
from cloudphone.platform import build_platform
from cloudphone.settings import Settings
from tests.support.leaks import drain
from tests.support.sagas import insert_pinned
from tests.support.server import TEST_SECRET

pytestmark = pytest.mark.usefixtures("restore_cli_logging")


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    """The test database's settings."""
    made: Settings = make_settings()
    return made


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The environment the CLI reads those settings from."""
    return {
        "CLOUDPHONE_DATA_DIR": str(settings.data_dir),
        "CLOUDPHONE_DATABASE_URL": settings.database_url,
        "CLOUDPHONE_JWT_SECRET": TEST_SECRET,
        "CLOUDPHONE_LOG_FORMAT": "json",
        "CLOUDPHONE_LOG_LEVEL": "warning",
    }


def cli(env: dict[str, str], *args: str) -> Result:
    """Run ``cloudphone ARGS``."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def runs(settings: Settings, unique: str) -> Iterator[dict[str, str]]:
    """Sagas of user ``cli-<unique>``: one COMPLETED and two FAILED after the pivot.

    The runs the test's commands set going (retries, forks, migrations) are driven to their
    end afterwards: the CLI has no worker.
    """

    async def seed() -> dict[str, str]:
        platform = build_platform(settings, with_worker=True)
        async with platform:
            engine = platform.engine
            user = f"cli-{unique}"
            done = await engine.start(DEMO_SAGA, {"message": "ok"}, started_by=user)
            # Fails whenever it runs in the next 30 s: FAILED for sure, whatever the machine's
            # speed (a retry later on would let it through; the tests only start that retry).
            later = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
            failing = {"fail_step": "NOTIFY", "fail_until": later}
            failed = await engine.start(DEMO_SAGA, failing, started_by=user)
            stuck = await engine.start(DEMO_SAGA, {"fail_step": "NOTIFY"}, started_by=user)
            for saga_id in (done, failed, stuck):
                await engine.wait(saga_id, timedelta(seconds=10))
        return {"completed": done, "failed": failed, "stuck": stuck, "user": user}

    async def finish() -> None:
        async with build_platform(settings, with_worker=True) as platform:
            await drain(platform.engine)

    yield asyncio.run(seed())
    asyncio.run(finish())


def test_token_create_prints_a_token_the_api_accepts(env: dict[str, str]) -> None:
    """The token's subject and role are what was asked for."""
    result = cli(env, "token", "create", "--user", "ops", "--role", "admin", "--ttl", "5m")
    assert result.exit_code == 0, result.output
    principal = verify_token(TEST_SECRET, result.stdout.strip())
    assert (principal.user_id, principal.role) == ("ops", Role.ADMIN)


def test_token_create_rejects_a_bad_ttl(env: dict[str, str]) -> None:
    """Exit code 2 for usage errors."""
    result = cli(env, "token", "create", "--user", "ops", "--ttl", "soon")
    assert result.exit_code == 2


def test_invalid_settings_exit_2_naming_the_variable(env: dict[str, str]) -> None:
    """The operator learns which variable to fix."""
    result = cli({**env, "CLOUDPHONE_PORT": "http"}, "db", "current")
    assert result.exit_code == 2
    assert "CLOUDPHONE_PORT" in result.stderr


def test_db_upgrade_then_current_is_up_to_date(env: dict[str, str]) -> None:
    """`db upgrade` migrates to head; db current says so."""
    assert cli(env, "db", "upgrade").exit_code == 0
    current = cli(env, "db", "current")
    assert current.exit_code == 0
    assert "up to date" in current.stdout


def test_sagas_list_and_show(env: dict[str, str], runs: dict[str, str]) -> None:
    """--json lists the user's runs with filters; show has the history; tables render."""
    listed = cli(env, "sagas", "list", "--started-by", runs["user"], "--json")
    assert listed.exit_code == 0, listed.output
    assert {r["id"] for r in json.loads(listed.stdout)} == {
        runs["completed"],
        runs["failed"],
        runs["stuck"],
    }
    attention = cli(
        env, "sagas", "list", "--started-by", runs["user"], "--attention", "--since", "1h", "--json"
    )
    assert {r["id"] for r in json.loads(attention.stdout)} == {runs["failed"], runs["stuck"]}
    table = cli(env, "sagas", "list", "--started-by", runs["user"], "--status", "completed")
    assert runs["completed"] in table.stdout
    assert runs["failed"] not in table.stdout
    shown = cli(env, "sagas", "show", runs["completed"], "--json")
    kinds = [event["kind"] for event in json.loads(shown.stdout)["history"]]
    assert kinds[0] == "saga_started"
    assert kinds[-1] == "saga_completed"
    assert "saga_completed" in cli(env, "sagas", "show", runs["completed"]).stdout


def test_sagas_operator_actions(env: dict[str, str], runs: dict[str, str]) -> None:
    """Retry and resolve act on FAILED runs and record the actor; refusals exit 1."""
    retried = cli(env, "sagas", "retry", runs["failed"], "--note", "fixed", "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["status"] == "RUNNING"
    resolved = cli(env, "sagas", "resolve", runs["stuck"], "--note", "by hand", "--actor", "kim")
    assert resolved.exit_code == 0, resolved.output
    history = json.loads(cli(env, "sagas", "show", runs["stuck"], "--json").stdout)["history"]
    assert history[-1]["kind"] == "operator_resolved"
    assert history[-1]["detail"] == {"actor": "kim", "note": "by hand"}
    refused = cli(env, "sagas", "cancel", runs["completed"])
    assert refused.exit_code == 1
    assert "cannot cancel" in refused.stderr
    missing = cli(env, "sagas", "show", "no-such-saga")
    assert missing.exit_code == 1
    assert "no saga run" in missing.stderr


def test_config_show_names_every_variable_and_hides_secrets(env: dict[str, str]) -> None:
    """`config show --json` maps each CLOUDPHONE_ variable to its value, secrets masked."""
    result = cli(env, "config", "show", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["CLOUDPHONE_PORT"] == 8000
    assert shown["CLOUDPHONE_JWT_SECRET"] == "**********"
    assert "CLOUDPHONE_BILLING__PROVIDER" in shown
    assert TEST_SECRET not in result.stdout


def test_config_show_explains_every_setting(env: dict[str, str], settings: Settings) -> None:
    """Every row has a meaning, nested sections too, and a multi-line docstring is whole."""
    rows = flatten(settings, ())
    assert len(rows) > 80
    assert [name for name, _value, meaning in rows if not meaning] == []
    wide = cli({**env, "COLUMNS": "600"}, "config", "show")
    assert wide.exit_code == 0, wide.output
    doc = " ".join((Settings.model_fields["database_url"].description or "").split())
    assert doc.endswith("to share one PostgreSQL between many processes.")
    assert doc in wide.stdout
    nested = " ".join((DevicesConfig.model_fields["sweep_interval"].description or "").split())
    assert nested in wide.stdout
    assert "CLOUDPHONE_DEVICES__SWEEP_INTERVAL" in wide.stdout


def test_sagas_list_never_wraps_an_id_on_a_narrow_terminal(
    env: dict[str, str], runs: dict[str, str]
) -> None:
    """At 60 columns every id is whole on one line, the table fits, and it says what is left out."""
    listed = cli({**env, "COLUMNS": "60"}, "sagas", "list", "--started-by", runs["user"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    for saga_id in (runs["completed"], runs["failed"], runs["stuck"]):
        assert any(saga_id in line for line in lines), listed.stdout
    assert max(len(line.rstrip()) for line in lines) <= 60, listed.stdout
    assert "--json" in listed.stdout
    wide = cli({**env, "COLUMNS": "200"}, "sagas", "list", "--started-by", runs["user"])
    assert "created (UTC)" in wide.stdout
    assert "left out" not in wide.stdout


def test_sagas_fork_migrate_and_orphans(
    env: dict[str, str], runs: dict[str, str], settings: Settings
) -> None:
    """Fork a finished run (refused across its pivot unless --force), list and move orphans."""
    forked = cli(env, "sagas", "fork", runs["completed"], "--from-step", "NOTIFY", "--json")
    assert forked.exit_code == 0, forked.output
    fork = json.loads(forked.stdout)
    assert (fork["forked_from"], fork["current_step"]) == (runs["completed"], "NOTIFY")
    across = cli(env, "sagas", "fork", runs["completed"], "--from-step", "PREPARE")
    assert across.exit_code == 1
    assert "not after the pivot COMMIT" in across.stderr
    forced = cli(env, "sagas", "fork", runs["completed"], "--from-step", "PREPARE", "--force")
    assert forced.exit_code == 0, forced.output
    assert f"forked {runs['completed']} as" in forced.stdout
    forks = cli(env, "sagas", "list", "--forked-from", runs["completed"], "--json")
    assert len(json.loads(forks.stdout)) == 2

    orphan = asyncio.run(_orphan(settings, runs["user"]))
    listed = cli(env, "sagas", "list", "--orphaned", "--started-by", runs["user"], "--json")
    assert [(r["id"], r["saga_version"]) for r in json.loads(listed.stdout)] == [(orphan, 4)]
    table = cli(
        {**env, "COLUMNS": "200"}, "sagas", "list", "--orphaned", "--started-by", runs["user"]
    )
    assert "ver" in table.stdout
    unknown = cli(env, "sagas", "migrate", orphan, "--to-version", "3")
    assert unknown.exit_code == 1
    assert "version 3 of demo is not registered here" in unknown.stderr
    moved = cli(env, "sagas", "migrate", orphan, "--to-version", "1", "--note", "4 is gone")
    assert moved.exit_code == 0, moved.output
    assert f"moved to version 1: {orphan}" in moved.stdout
    history = json.loads(cli(env, "sagas", "show", orphan, "--json").stdout)["history"]
    assert history[-1]["kind"] == "operator_migrated"
    assert history[-1]["detail"]["note"] == "4 is gone"


async def _orphan(settings: Settings, user: str) -> str:
    """A demo run on version 4, which nothing registers."""
    platform = build_platform(settings, with_worker=False)
    try:
        return await insert_pinned(platform.engine, "demo", "PREPARE", 4, user)
    finally:
        await platform.close()
