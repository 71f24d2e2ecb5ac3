"""Server RSS during a 200 MB APK upload: the body streams to disk, never into memory.

Starts a real ``cloudphone serve`` (API + worker, SQLite) on the filesystem store or on S3 (a
private SeaweedFS), warms it up with one small upload, then POSTs a 200 MiB APK as a streamed
multipart body and waits until its ``app_upload`` saga has stored it. The server's RSS is
sampled from /proc every 10 ms from before the request until the saga completed; its peak
RSS counter (VmHWM) is reset first and read at the end too.

    python bench/upload_memory.py                    # filesystem store
    python bench/upload_memory.py --store s3         # S3 on SeaweedFS (multipart, 16 MiB parts)
    python bench/upload_memory.py --size-mb 500

Target (issue 5): a 200 MB upload raises the server's RSS by < 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.apk_builder import build_apk  # noqa: E402
from tests.support.apps_s3 import ACCESS_KEY, SECRET_KEY, WeedServer  # noqa: E402
from tests.support.server import auth, child_env, start_serve  # noqa: E402

from cloudphone.domain import Role  # noqa: E402 - after the path tweak above

MiB = 1024 * 1024
TARGET_MB = 50
TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}


@dataclass
class Result:
    store: str
    upload_mb: float
    baseline_rss_mb: float
    peak_rss_mb: float
    peak_hwm_mb: float
    rss_increase_mb: float
    request_s: float
    saga_s: float
    saga_status: str
    target_mb: int = TARGET_MB

    @property
    def passed(self) -> bool:
        return self.saga_status == "COMPLETED" and self.rss_increase_mb < self.target_mb


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as file:
        file.write("5")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler(threading.Thread):
    """Samples VmRSS of a pid every 10 ms; keeps the maximum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            time.sleep(0.01)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kb


async def multipart_stream(path: Path, boundary: str) -> AsyncIterator[bytes]:
    """The multipart body, read from disk 1 MiB at a time (the client stays small too)."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.apk"\r\n'
        "Content-Type: application/vnd.android.package-archive\r\n\r\n"
    ).encode()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


async def upload(client: httpx.AsyncClient, headers: dict[str, str], path: Path) -> str:
    boundary = uuid.uuid4().hex
    response = await client.post(
        "/apps",
        content=multipart_stream(path, boundary),
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    if response.status_code != 202:
        raise SystemExit(f"upload refused: {response.status_code} {response.text}")
    saga_id: str = response.json()["saga_id"]
    return saga_id


async def wait_saga(client: httpx.AsyncClient, headers: dict[str, str], saga_id: str) -> str:
    while True:
        body = (await client.get(f"/sagas/{saga_id}", headers=headers)).json()
        if body["status"] in TERMINAL:
            return str(body["status"])
        await asyncio.sleep(0.05)


async def measure(
    base_url: str, pid: int, small: Path, big: Path, big_size: int, store: str
) -> Result:
    headers = auth("bench-uploader", Role.USER)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await wait_saga(client, headers, await upload(client, headers, small))  # warm-up
        reset_peak(pid)
        baseline_kb = status_kb(pid, "VmRSS")
        sampler = RssSampler(pid)
        sampler.start()
        started = time.perf_counter()
        saga_id = await upload(client, headers, big)
        accepted = time.perf_counter()
        status = await wait_saga(client, headers, saga_id)
        finished = time.perf_counter()
        peak_kb = sampler.stop()
        hwm_kb = status_kb(pid, "VmHWM")
    peak = max(peak_kb, hwm_kb)
    return Result(
        store=store,
        upload_mb=round(big_size / 1e6, 1),
        baseline_rss_mb=round(baseline_kb / 1024, 1),
        peak_rss_mb=round(peak_kb / 1024, 1),
        peak_hwm_mb=round(hwm_kb / 1024, 1),
        rss_increase_mb=round((peak - baseline_kb) / 1024, 1),
        request_s=round(accepted - started, 2),
        saga_s=round(finished - accepted, 2),
        saga_status=status,
    )


def store_env(store: str, work: Path) -> tuple[dict[str, str], WeedServer | None]:
    if store == "filesystem":
        return {}, None
    weed = WeedServer(work / "weed")
    weed.start()
    return {
        "CLOUDPHONE_APPS__STORAGE": "s3",
        "CLOUDPHONE_APPS__S3_ENDPOINT": weed.endpoint,
        "CLOUDPHONE_APPS__S3_ACCESS_KEY": ACCESS_KEY,
        "CLOUDPHONE_APPS__S3_SECRET_KEY": SECRET_KEY,
    }, weed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["filesystem", "s3"], default="filesystem")
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        work = Path(tmp)
        big, small = work / "big.apk", work / "small.apk"
        build_apk(big, package="com.bench.big", label="Big", big_asset_size=args.size_mb * MiB)
        build_apk(small, package="com.bench.small", label="Small")
        extra, weed = store_env(args.store, work)
        env = child_env(work / "var", None, CLOUDPHONE_LOG_LEVEL="warning", **extra)
        server = start_serve(work, env)
        try:
            assert server.base_url is not None
            size = big.stat().st_size
            result = asyncio.run(measure(server.base_url, server.pid, small, big, size, args.store))
        finally:
            server.stop()
            if weed is not None:
                weed.stop(kill=True)
    print(json.dumps({**asdict(result), "passed": result.passed}, indent=2))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
