"""A fault-injecting HTTP proxy in front of localstripe, for faults localstripe cannot make.

localstripe never answers 429, never loses an answer after it acted, and cannot be held in
the middle of a request. The proxy forwards everything to localstripe except what a test
scripts, request by request:

* :meth:`StripeFaultProxy.answer` — answer the next matching requests itself (e.g. a 429 in
  Stripe's error format) without forwarding them;
* :meth:`StripeFaultProxy.hold` — hold the next matching request, before forwarding it or
  after localstripe answered, until the test releases it (meanwhile it can SIGKILL the client).
  A held request whose client went away is dropped: it is never forwarded afterwards.

It runs on its own event loop in a thread (127.0.0.1, free port), so a test may block its own
loop — waiting for a child process, say — while the proxy keeps serving. Test-only. The
``stripe_proxy`` fixture puts one in front of the module's ``localstripe`` fixture.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.billing_localstripe import LocalStripe, free_port

_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass
class Held:
    """A request the proxy holds; the test waits for it to arrive, then releases it."""

    arrived: threading.Event = field(default_factory=threading.Event)
    """Set once a matching request is being held."""
    _release: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 20.0) -> None:
        """Block until a matching request is held (fails at the deadline)."""
        if not self.arrived.wait(timeout):
            raise AssertionError(f"no request to hold arrived within {timeout}s")

    def release(self) -> None:
        """Let the held request go on (it is dropped if its client is gone)."""
        self._release.set()


@dataclass
class _Rule:
    method: str
    path: str
    times: int
    answer: tuple[int, dict[str, str], bytes] | None = None
    held: Held | None = None
    after_forward: bool = False

    def matches(self, request: web.Request) -> bool:
        return (
            self.times > 0 and request.method == self.method and request.path.startswith(self.path)
        )


class StripeFaultProxy:
    """Forwards to ``upstream`` (localstripe) except for scripted faults.

    Args:
        upstream: localstripe's base URL, ``http://127.0.0.1:<port>``.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.seen: list[str] = []
        """``METHOD /path`` of every request received, in order."""
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stripe-fault-proxy", daemon=True)
        self._stop: asyncio.Event | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``: give it as ``stripe_api_base``."""
        return f"http://127.0.0.1:{self.port}"

    def answer(
        self,
        method: str,
        path: str,
        status: int,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests ``method path*`` with ``status`` and JSON ``body``."""
        reply = (status, {"Content-Type": "application/json", **(headers or {})})
        rule = _Rule(method, path, times, answer=(*reply, json.dumps(body).encode()))
        with self._lock:
            self._rules.append(rule)

    def rate_limit(self, method: str, path: str, *, times: int = 1) -> None:
        """Answer 429 like Stripe does when it throttles (``rate_limit`` error)."""
        error = {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}
        self.answer(method, path, 429, {"error": error}, times=times)

    def hold(self, method: str, path: str, *, after_forward: bool = False) -> Held:
        """Hold the next request ``method path*``, before forwarding it or after its answer."""
        held = Held()
        with self._lock:
            self._rules.append(_Rule(method, path, 1, held=held, after_forward=after_forward))
        return held

    def start(self) -> None:
        """Serve in a background thread; returns once the port listens."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")

    def stop(self) -> None:
        """Release everything held, stop serving and join the thread."""
        with self._lock:
            for rule in self._rules:
                if rule.held is not None:
                    rule.held.release()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    # -- the server thread ---------------------------------------------------------------

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            self._session = session
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    def _take(self, request: web.Request) -> _Rule | None:
        with self._lock:
            self.seen.append(f"{request.method} {request.path}")
            rule = next((r for r in self._rules if r.matches(request)), None)
            if rule is not None:
                rule.times -= 1
        return rule

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rule = self._take(request)
        body = await request.read()
        if rule is not None and rule.answer is not None:
            status, headers, payload = rule.answer
            return web.Response(status=status, headers=headers, body=payload)
        if rule is not None and rule.held is not None and not rule.after_forward:
            await self._wait(rule.held)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client is gone: never forward it
        status, headers, payload = await self._forward(request, body)
        if rule is not None and rule.held is not None and rule.after_forward:
            await self._wait(rule.held)
        return web.Response(status=status, headers=headers, body=payload)

    async def _wait(self, held: Held) -> None:
        held.arrived.set()
        await asyncio.to_thread(held._release.wait)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, kept, payload


@pytest.fixture
def stripe_proxy(localstripe: LocalStripe) -> Iterator[StripeFaultProxy]:
    """A fault proxy in front of localstripe, stopped after the test."""
    proxy = StripeFaultProxy(localstripe.base)
    proxy.start()
    yield proxy
    proxy.stop()
