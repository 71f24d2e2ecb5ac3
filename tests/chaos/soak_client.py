"""The soak's HTTP client: what a careful user does, and a tally of what it saw.

Each request carries the user's token. A 503 is retried as told by ``Retry-After``; a lost
connection (the API was SIGKILLed, or is starting again) is retried with the same body and
the same ``Idempotency-Key``, so the platform sees a repeat, never a second intent. Every
answer is counted by route and status; an answer outside what the route may say is kept as
unexpected (a 500, say), and the soak fails on it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.server import auth

TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}
REQUEST_DEADLINE = 120.0
"""Longest a request keeps being retried (through an API restart or a database outage)."""


@dataclass
class Tally:
    """What the clients saw."""

    answers: Counter[str] = field(default_factory=Counter)
    """``route status`` → count."""
    unavailable: int = 0
    """503s retried."""
    connection_errors: int = 0
    """Requests retried because the connection failed (the API down or restarting)."""
    replays: int = 0
    """Repeated Idempotency-Keys answered with the first request's result."""
    unexpected: list[str] = field(default_factory=list)
    """Answers no route should give (5xx but 503, or a status outside the route's)."""
    saga_ids: set[str] = field(default_factory=set)
    """Every saga started over HTTP."""
    seen: Counter[str] = field(default_factory=Counter)
    """Outcomes of the stories worth counting (install races, uploads undone...)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "answers": dict(sorted(self.answers.items())),
            "unavailable_retried": self.unavailable,
            "connection_errors_retried": self.connection_errors,
            "idempotent_replays": self.replays,
            "unexpected": self.unexpected[:50],
            "sagas_started_over_http": len(self.saga_ids),
            "seen": dict(sorted(self.seen.items())),
        }


@dataclass
class Client:
    """One HTTP client shared by every simulated user."""

    http: httpx.AsyncClient
    tally: Tally = field(default_factory=Tally)

    async def send(
        self,
        method: str,
        path: str,
        user: str,
        *,
        route: str,
        allowed: tuple[int, ...],
        key: str | None = None,
        retry_unavailable: bool = True,
        **options: Any,
    ) -> httpx.Response:
        """Send until an answer that is not a retried 503 or a failed connection.

        Args:
            method: HTTP method.
            path: Path on the API.
            user: Whose token goes with it.
            route: Name the answer is counted under.
            allowed: Statuses this route may answer here (others are unexpected).
            key: ``Idempotency-Key`` (kept across retries).
            retry_unavailable: Retry 503s (else return the 503).
            **options: Passed to ``httpx`` (``json``, ``content``, ``headers``).
        """
        headers = {**auth(user), **options.pop("headers", {})}
        if key is not None:
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + REQUEST_DEADLINE
        resent = False
        while True:
            try:
                response = await self.http.request(method, path, headers=headers, **options)
            except httpx.TransportError:
                # The request may have been served before the connection broke: resent with
                # its key, it is then answered as a replay (200).
                resent = key is not None
                self.tally.connection_errors += 1
                self._check_deadline(deadline, route, "connection errors")
                await asyncio.sleep(0.2)  # the API is restarting: a client's back-off
                continue
            if response.status_code == 503 and retry_unavailable:
                self.tally.unavailable += 1
                self._check_deadline(deadline, route, "503s")
                # As a client is told to: wait Retry-After seconds (capped), then resend.
                await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
                continue
            self.tally.answers[f"{route} {response.status_code}"] += 1
            replayed = resent and response.status_code == 200 and 202 in allowed
            if response.status_code not in allowed and not replayed:
                self.tally.unexpected.append(
                    f"{method} {path} ({route}): {response.status_code} {response.text[:300]}"
                )
            return response

    def _check_deadline(self, deadline: float, route: str, what: str) -> None:
        if time.monotonic() > deadline:
            message = f"{route}: only {what} for {REQUEST_DEADLINE}s"
            self.tally.unexpected.append(message)
            raise TimeoutError(message)

    async def started(
        self, method: str, path: str, user: str, *, route: str, replay: bool, **options: Any
    ) -> httpx.Response:
        """Start a saga (202) with a fresh Idempotency-Key; with ``replay``, send it again.

        The repeat must answer 200 with the same saga id.
        """
        key = uuid.uuid4().hex
        allowed = options.pop("allowed", (202,))
        response = await self.send(
            method, path, user, route=route, allowed=allowed, key=key, **options
        )
        if response.status_code not in (200, 202):
            return response
        saga_id = saga_of(response.json())
        self.tally.saga_ids.add(saga_id)
        if replay:
            again = await self.send(
                method, path, user, route=f"{route} (replay)", allowed=(200,), key=key, **options
            )
            if again.status_code == 200 and saga_of(again.json()) != saga_id:
                self.tally.unexpected.append(f"{route}: replay answered another saga")
            self.tally.replays += again.status_code == 200
        return response

    async def saga_until_terminal(self, user: str, saga_id: str, within: float = 90.0) -> str:
        """Poll ``GET /sagas/{id}`` until it is terminal; returns its status."""
        deadline = time.monotonic() + within
        while True:
            response = await self.send(
                "GET", f"/sagas/{saga_id}", user, route="GET /sagas/{id}", allowed=(200,)
            )
            status = str(response.json().get("status"))
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                self.tally.unexpected.append(f"saga {saga_id} still {status} after {within}s")
                return status
            await asyncio.sleep(0.3)  # polling the saga's status: a user has no event either

    async def device_until(
        self, user: str, device_id: str, statuses: set[str], within: float = 90.0
    ) -> str:
        """Poll ``GET /devices/{id}`` until its status is one of ``statuses``; returns it."""
        deadline = time.monotonic() + within
        while True:
            response = await self.send(
                "GET", f"/devices/{device_id}", user, route="GET /devices/{id}", allowed=(200,)
            )
            status = str(response.json().get("status"))
            if status in statuses or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.3)  # polling the device's status: a user has no event either

    async def new_device(self, user: str, name: str, *, replay: bool = False) -> str | None:
        """``POST /devices`` (a small device); its id, or None when the quota refused it (409)."""
        response = await self.started(
            "POST", "/devices", user, route="POST /devices", replay=replay, allowed=(202, 409),
            json={"name": name, "cpu": 0.5, "memory_mb": 256},
        )  # fmt: skip
        if response.status_code != 202:
            return None  # 409 quota_exceeded: refused synchronously, nothing created
        return str(response.json()["device"]["id"])

    async def delete_device(self, user: str, device_id: str) -> None:
        """``DELETE /devices/{id}``, asked again while 409 (being created or restarted)."""
        for _ in range(20):
            deleted = await self.send(
                "DELETE", f"/devices/{device_id}", user, route="DELETE /devices/{id}",
                allowed=(202, 409),
            )  # fmt: skip
            if deleted.status_code == 202:
                self.tally.saga_ids.add(deleted.json()["saga_id"])
                return
            # 409: still being created or restarted; ask again once it settles.
            await self.device_until(user, device_id, {"RUNNING", "STOPPED", "ERROR"}, within=30)
        self.tally.unexpected.append(f"device {device_id}: DELETE refused 20 times")


def refusal(response: httpx.Response) -> str:
    """The ``code`` of an error answer (empty when the body is not one)."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def saga_of(body: dict[str, Any]) -> str:
    """The saga id of any "accepted" answer (``/demo`` says ``id``, the others ``saga_id``)."""
    return str(body.get("saga_id") or body["id"])
