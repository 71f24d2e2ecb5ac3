"""Jinja2 templates of the console, with the filters every page uses (times, durations, ids).

Templates autoescape everything; a page is rendered by :func:`render` with the request, so
each template knows the console's base path, the session, its CSRF token and the time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cloudphone.console.session import Session
from cloudphone.saga import SagaStatus

TEMPLATES = Path(__file__).parent / "templates"

STATUS_TONE = {
    SagaStatus.PENDING.value: "neutral",
    SagaStatus.RUNNING.value: "info",
    SagaStatus.COMPENSATING.value: "warn",
    SagaStatus.COMPLETED.value: "ok",
    SagaStatus.COMPENSATED.value: "muted",
    SagaStatus.TIMED_OUT.value: "warn",
    SagaStatus.FAILED.value: "bad",
}
"""Colour family of each status (the badge always shows the status's name as text too)."""


def relative(at: datetime | None, now: datetime | None = None) -> str:
    """``12 s ago``, ``3 min ago``, ``in 2 h``: how far ``at`` is from ``now``."""
    if at is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - at).total_seconds()
    ahead = seconds < 0
    span = _span(abs(seconds))
    if span == "now":
        return "just now"
    return f"in {span}" if ahead else f"{span} ago"


def _span(seconds: float) -> str:
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def absolute(at: datetime | None) -> str:
    """``2026-11-25 10:02:03 UTC``."""
    if at is None:
        return "—"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: datetime | None) -> str:
    """Machine-readable time for ``<time datetime>``."""
    return "" if at is None else at.astimezone(UTC).isoformat()


def millis(ms: float | None) -> str:
    """``850 ms``, ``1.2 s``, ``3 min 4 s``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def short(identifier: str | None) -> str:
    """The first 8 characters of an id (the full id stays in the page to copy)."""
    return "—" if not identifier else identifier[:8]


def pretty_json(value: Any) -> str:
    """Indented JSON for the data panels."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def build_environment() -> Environment:
    """The template environment (autoescaped, strict about undefined names)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        relative=relative,
        absolute=absolute,
        iso=iso,
        millis=millis,
        short=short,
        pretty_json=pretty_json,
        tone=lambda status: STATUS_TONE.get(str(status), "neutral"),
    )
    env.globals["statuses"] = [s.value for s in SagaStatus]
    return env


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` for ``request``: a whole page, or a fragment for htmx."""
    env: Environment = request.app.state.templates
    session: Session | None = getattr(request.state, "session", None)
    console = request.app.state.console
    values = {
        "request": request,
        "base": request.scope.get("root_path", ""),
        "session": session,
        "csrf": console.signer.csrf_token(session) if session is not None else "",
        "now": datetime.now(UTC),
        "is_htmx": request.headers.get("HX-Request") == "true",
        "nav": "",
        **context,
    }
    html = env.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code)
