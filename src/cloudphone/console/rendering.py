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

RESOURCE_TONE = {
    "SUCCESS": "ok",
    "SUCCEEDED": "ok",
    "PAID": "ok",
    "AVAILABLE": "ok",
    "PROCESSING": "info",
    "UPLOADING": "info",
    "INSTALLED": "ok",
    "INSTALLING": "info",
    "UNINSTALLING": "warn",
    "PARTIALLY_REFUNDED": "info",
    "REFUNDING": "warn",
    "DELETING": "warn",
    "NEEDS_ATTENTION": "bad",
    "REFUNDED": "muted",
    "CANCELLED": "muted",
    "DELETED": "muted",
}
"""Colour family of the business resources' statuses (PENDING and FAILED as for sagas)."""


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


_ZERO_DIGITS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
MINOR_DIGITS: dict[str, int] = {
    **dict.fromkeys(_ZERO_DIGITS.split(" "), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
"""Digits after the decimal point of the currencies whose minor unit is not a hundredth
(ISO 4217); every other currency has two."""


def money(amount: int | None, currency: str) -> str:
    """``1,050.00 EUR`` from 1050 minor units of EUR; ``500 JPY`` from 500 yen."""
    if amount is None:
        return "—"
    digits = MINOR_DIGITS.get(currency.upper(), 2)
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**digits)
    fraction = f".{minor:0{digits}d}" if digits else ""
    return f"{sign}{whole:,}{fraction} {currency}"


def size(count: int | None) -> str:
    """``812 B``, ``12.3 KiB``, ``4.0 MiB``, ``1.2 GiB``."""
    if count is None:
        return "—"
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def short(identifier: str | None) -> str:
    """The first 8 characters of an id (the full id stays in the page to copy)."""
    return "—" if not identifier else identifier[:8]


def pretty_json(value: Any) -> str:
    """Indented JSON for the data panels."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def tone(status: object) -> str:
    """The colour family of a saga's or a business resource's status."""
    name = str(status)
    return STATUS_TONE.get(name) or RESOURCE_TONE.get(name, "neutral")


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
        money=money,
        span=lambda delta: _span(delta.total_seconds()),
        size=size,
        pretty_json=pretty_json,
        tone=tone,
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
