"""The sagas list's filters, read from the query string (bad values become messages, not 422s)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from cloudphone.saga import SagaStatus

RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
"""Relative time ranges (runs created within the last …)."""
PAGE_SIZE = 50
MAX_OFFSET = 100_000


@dataclass(frozen=True)
class SagaFilters:
    """What the operator asked the list for.

    Attributes:
        status: Only runs in this status.
        saga_type: Only this type.
        range: A key of :data:`RANGES`, or empty.
        after: Created at or after (custom range, UTC).
        before: Created before (custom range, UTC).
        started_by: Only runs this user started (admins).
        needs_attention: Only unresolved FAILED runs.
        orphaned: Only active runs of a version no live worker drives.
        q: A saga id or business id to search for.
        offset: Rows to skip (pagination).
        problems: Values that could not be used, as messages.
    """

    status: SagaStatus | None = None
    saga_type: str = ""
    range: str = ""
    after: datetime | None = None
    before: datetime | None = None
    started_by: str = ""
    needs_attention: bool = False
    orphaned: bool = False
    q: str = ""
    offset: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, query: Mapping[str, str], *, admin: bool) -> SagaFilters:
        """The filters in ``query`` (``started_by`` only for admins)."""
        problems: list[str] = []
        status = _status(query.get("status", ""), problems)
        range_key = parse_range(query.get("range", ""), problems)
        return cls(
            status=status,
            saga_type=query.get("type", "").strip()[:100],
            range=range_key,
            after=parse_time(query.get("after", ""), "from", problems),
            before=parse_time(query.get("before", ""), "to", problems),
            started_by=query.get("started_by", "").strip()[:200] if admin else "",
            needs_attention=query.get("needs_attention", "") in ("1", "on", "true"),
            orphaned=query.get("orphaned", "") in ("1", "on", "true"),
            q=query.get("q", "").strip()[:200],
            offset=parse_offset(query.get("offset", "0"), problems),
            problems=problems,
        )

    def created_after(self, now: datetime) -> datetime | None:
        """Lower bound on ``created_at``: the custom start, or now minus the range."""
        return window_start(self.range, self.after, now)

    def query_string(self, **changes: object) -> str:
        """These filters as a query string, with ``changes`` applied (e.g. ``offset=50``)."""
        values: dict[str, object] = {
            "q": self.q,
            "status": self.status.value if self.status else "",
            "type": self.saga_type,
            "range": self.range,
            "after": local_time(self.after),
            "before": local_time(self.before),
            "started_by": self.started_by,
            "needs_attention": "1" if self.needs_attention else "",
            "orphaned": "1" if self.orphaned else "",
            "offset": self.offset or "",
        }
        return encode_query(values, changes)

    @property
    def active(self) -> bool:
        """Any filter is set (the empty state then says so)."""
        return bool(self.query_string(offset=""))


def _status(raw: str, problems: list[str]) -> SagaStatus | None:
    if not raw:
        return None
    try:
        return SagaStatus(raw.upper())
    except ValueError:
        problems.append(f"unknown status {raw!r}")
        return None


def encode_query(values: Mapping[str, object], changes: Mapping[str, object]) -> str:
    """A list's filters as a query string: ``values`` with ``changes`` applied, empties left out."""
    merged = {**values, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in ("", None, 0)})


def parse_range(raw: str, problems: list[str]) -> str:
    """``raw`` if it is a key of :data:`RANGES`, else empty (and a message)."""
    if raw and raw not in RANGES:
        problems.append(f"unknown time range {raw!r}")
        return ""
    return raw


def window_start(range_key: str, after: datetime | None, now: datetime) -> datetime | None:
    """Lower bound on ``created_at``: the later of ``after`` and now minus the range."""
    if range_key:
        start = now - RANGES[range_key]
        return max(start, after) if after else start
    return after


def parse_time(raw: str, label: str, problems: list[str]) -> datetime | None:
    """A ``datetime-local`` value (or any ISO 8601 time) as UTC; None and a message if bad."""
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(f"the {label!r} time {raw!r} is not a date and time")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def local_time(at: datetime | None) -> str:
    """The value a ``datetime-local`` input shows (UTC, to the minute)."""
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def parse_offset(raw: str, problems: list[str]) -> int:
    """A page offset within ``0..MAX_OFFSET``; 0 and a message if it is not a number."""
    try:
        value = int(raw or 0)
    except ValueError:
        problems.append(f"bad page offset {raw!r}")
        return 0
    return min(max(value, 0), MAX_OFFSET)
