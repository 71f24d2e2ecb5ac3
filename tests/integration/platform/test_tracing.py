"""OpenTelemetry in the platform: settings, request spans joined by the runs they start.

Also: the OTLP exporter, a clear error without the extra, and nothing loaded when it is off.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from cloudphone.api.app import create_app
from cloudphone.demo import DEMO_SAGA
from cloudphone.platform import build_platform
from cloudphone.settings import SettingsError, load_settings
from cloudphone.telemetry import Telemetry
from tests.support.otlp import otlp_receiver
from tests.support.server import auth, child_env, token
from tests.support.tracing import SpanLog, parent_span_id, span_id, trace_id
from tests.support.waiting import wait_sync

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_tracing_is_off_by_default_and_read_from_cloudphone_otel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CLOUDPHONE_OTEL__* fill the otel section; durations take 250ms; bad values are named."""
    monkeypatch.chdir(tmp_path)
    assert load_settings(jwt_secret="s" * 32).otel.enabled is False
    monkeypatch.setenv("CLOUDPHONE_OTEL__ENABLED", "true")
    monkeypatch.setenv("CLOUDPHONE_OTEL__SERVICE_NAME", "api-eu")
    monkeypatch.setenv("CLOUDPHONE_OTEL__EXPORTER", "console")
    monkeypatch.setenv("CLOUDPHONE_OTEL__CONSOLE_FILE", str(tmp_path / "spans.jsonl"))
    monkeypatch.setenv("CLOUDPHONE_OTEL__EXPORT_DELAY", "250ms")
    otel = load_settings(jwt_secret="s" * 32).otel
    assert (otel.enabled, otel.service_name, otel.exporter) == (True, "api-eu", "console")
    assert otel.console_file == tmp_path / "spans.jsonl"
    assert otel.export_delay.total_seconds() == 0.25
    monkeypatch.setenv("CLOUDPHONE_OTEL__EXPORTER", "zipkin")
    with pytest.raises(SettingsError, match="CLOUDPHONE_OTEL__EXPORTER"):
        load_settings(jwt_secret="s" * 32)


async def test_a_traced_request_and_the_run_it_starts_are_one_trace(make_settings: Any) -> None:
    """The caller's traceparent → the request's server span → saga.start → drive → steps."""
    log = SpanLog()
    settings = make_settings(otel={"enabled": True, "exporter": "console"})
    platform = build_platform(
        settings, with_worker=True, telemetry=Telemetry(settings.otel, log.processor)
    )
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
    async with platform:
        transport = httpx.ASGITransport(app=create_app(platform))
        async with httpx.AsyncClient(transport=transport, base_url="http://cloudphone") as http:
            assert (await http.get("/healthz")).status_code == 200
            headers = {**auth("tracer"), "traceparent": traceparent}
            response = await http.post("/demo", json={}, headers=headers)
            assert response.status_code == 202, response.text
            saga_id = response.json()["id"]
            await platform.engine.wait(saga_id, timeout=timedelta(seconds=10))

    (server,) = [s for s in log.spans() if s.kind is SpanKind.SERVER]
    assert server.name == "POST /demo"  # probes are not traced
    assert f"{trace_id(server):032x}" == TRACE_ID
    assert f"{parent_span_id(server):016x}" == CALLER_SPAN
    run_spans = log.of_run(saga_id)
    assert [s.name for s in run_spans] == [
        f"saga.start {DEMO_SAGA}",
        "saga.step PREPARE",
        "saga.step COMMIT",
        "saga.step NOTIFY",
        f"saga.run {DEMO_SAGA}",
    ]
    assert {f"{trace_id(s):032x}" for s in run_spans} == {TRACE_ID}
    assert parent_span_id(run_spans[0]) == span_id(server)


async def test_spans_reach_an_otlp_http_collector(make_settings: Any) -> None:
    """exporter=otlp sends batches to the endpoint, with the configured service name."""
    with otlp_receiver() as receiver:
        settings = make_settings(
            otel={
                "enabled": True,
                "exporter": "otlp",
                "endpoint": receiver.url,
                "export_delay": "50ms",
                "service_name": "cloudphone-test",
            }
        )
        async with build_platform(settings, with_worker=True) as platform:
            saga_id = await platform.engine.start(DEMO_SAGA, {})
            await platform.engine.wait(saga_id, timeout=timedelta(seconds=10))

            def exported() -> bool:
                names = {s.name for s in receiver.spans() if s.attributes.get("saga.id") == saga_id}
                return f"saga.run {DEMO_SAGA}" in names

            await asyncio.to_thread(wait_sync, exported, timeout=15, what="spans exported")
    mine = [s for s in receiver.spans() if s.attributes.get("saga.id") == saga_id]
    assert {s.service for s in mine} == {"cloudphone-test"}
    assert len({s.trace_id for s in mine}) == 1
    steps = [s for s in mine if s.name.startswith("saga.step")]
    assert {(s.attributes["saga.step"], s.attributes["saga.outcome"]) for s in steps} == {
        ("PREPARE", "success"),
        ("COMMIT", "success"),
        ("NOTIFY", "success"),
    }


def _python(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env=child_env(tmp_path / "var", **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


BLOCK_OTEL_EXTRA = """
import sys
# What the otel extra adds; opentelemetry-api itself comes with FastAPI.
sys.modules["opentelemetry.sdk"] = None
sys.modules["opentelemetry.instrumentation"] = None
from cloudphone.cli import app
app(["worker"])
"""


def test_tracing_on_without_the_otel_extra_is_refused_naming_it(tmp_path: Path) -> None:
    """`cloudphone worker` exits 2 at start: which variable, and what to install."""
    done = _python(BLOCK_OTEL_EXTRA, tmp_path, CLOUDPHONE_OTEL__ENABLED="true")
    assert done.returncode == 2, done.stderr
    assert "CLOUDPHONE_OTEL__ENABLED" in done.stderr
    assert "pip install 'cloudphone[otel]'" in done.stderr


ENGINE_ALONE = """
import asyncio, json, sys
from datetime import timedelta
from cloudphone.saga import Saga, SagaEngine

saga = Saga("plain")

@saga.step("ONLY")
async def only(ctx):
    return None

async def main():
    engine = SagaEngine("sqlite+aiosqlite:///engine.db", [saga])
    await engine.create_schema()
    async with engine.worker(concurrency=1):
        await engine.wait(await engine.start("plain", {}), timeout=timedelta(seconds=10))
    await engine.close()

asyncio.run(main())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
"""

PLATFORM_AND_API = """
import asyncio, json, os, sys
from datetime import timedelta
import httpx
from cloudphone.api.app import create_app
from cloudphone.platform import build_platform
from cloudphone.settings import load_settings

async def main():
    async with build_platform(load_settings(), with_worker=True) as platform:
        transport = httpx.ASGITransport(app=create_app(platform))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as http:
            headers = {"Authorization": "Bearer " + os.environ["TOKEN"]}
            response = await http.post("/demo", json={}, headers=headers)
            assert response.status_code == 202, response.text
            run = await platform.engine.wait(response.json()["id"], timeout=timedelta(seconds=10))
            assert run.status.value == "COMPLETED", run

asyncio.run(main())
tracing = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter",
           "cloudphone.telemetry", "cloudphone.saga.otel")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(tracing))))
"""


def test_with_tracing_off_the_engine_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    """An engine user who never turns tracing on never loads OpenTelemetry at all."""
    done = _python(ENGINE_ALONE, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_with_tracing_off_the_platform_loads_no_sdk_exporter_or_instrumentation(
    tmp_path: Path,
) -> None:
    """Serving a request and running a saga with tracing off loads none of the otel extra."""
    done = _python(PLATFORM_AND_API, tmp_path, TOKEN=token("off"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert os.path.exists(tmp_path / "var" / "cloudphone.db")
