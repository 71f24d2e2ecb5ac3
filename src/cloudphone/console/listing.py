"""Filters of the billing lists (orders, payments, refunds), read from the query string.

Like the sagas list's filters, a value that cannot be used becomes a message on the page, not
a 422: an operator who typed a bad date still sees the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cloudphone.billing.models import Listing
from cloudphone.console.filters import (
    PAGE_SIZE,
    encode_query,
    local_time,
    parse_offset,
    parse_range,
    parse_time,
    window_start,
)

MAX_ID = 64
"""Longest id a parent filter (``payment_id``, ``order_id``) accepts."""


@dataclass(frozen=True)
class ListFilters:
    """What the operator asked a billing list for.

    Attributes:
        status: Only rows in this status (a value of the list's status enum), or empty.
        range: A key of :data:`~cloudphone.console.filters.RANGES`, or empty.
        after: Created at or after (custom range, UTC).
        before: Created before (custom range, UTC).
        user: Only this user's rows (admins; users always see their own).
        parent: The parent filter's name (``payment_id``, ``order_id``) and value, if any.
        offset: Rows to skip (pagination).
        problems: Values that could not be used, as messages.
    """

    status: str = ""
    range: str = ""
    after: datetime | None = None
    before: datetime | None = None
    user: str = ""
    parent: tuple[str, str] | None = None
    offset: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls,
        query: Mapping[str, str],
        *,
        admin: bool,
        statuses: Iterable[str],
        parent: str | None = None,
    ) -> ListFilters:
        """The filters in ``query``: ``user`` only for admins.

        Args:
            query: The query string.
            admin: Whether the caller is an admin.
            statuses: The statuses the list's filter accepts.
            parent: The one parent filter the list takes (``payment_id``), if any.
        """
        problems: list[str] = []
        status = query.get("status", "").strip().upper()
        if status and status not in set(statuses):
            problems.append(f"unknown status {query.get('status')!r}")
            status = ""
        parent_value = query.get(parent, "").strip()[:MAX_ID] if parent else ""
        return cls(
            status=status,
            range=parse_range(query.get("range", ""), problems),
            after=parse_time(query.get("after", ""), "from", problems),
            before=parse_time(query.get("before", ""), "to", problems),
            user=query.get("user", "").strip()[:200] if admin else "",
            parent=(parent, parent_value) if parent and parent_value else None,
            offset=parse_offset(query.get("offset", "0"), problems),
            problems=problems,
        )

    def listing(self, now: datetime) -> Listing:
        """Billing's listing of one page plus one row (which tells whether another follows)."""
        return Listing(
            user_id=self.user or None,
            created_after=window_start(self.range, self.after, now),
            created_before=self.before,
            limit=PAGE_SIZE + 1,
            offset=self.offset,
        )

    def parent_id(self, name: str) -> str | None:
        """The value of parent filter ``name``, if set."""
        return self.parent[1] if self.parent and self.parent[0] == name else None

    def query_string(self, **changes: object) -> str:
        """These filters as a query string, with ``changes`` applied (e.g. ``offset=50``)."""
        values: dict[str, object] = {
            "status": self.status,
            "range": self.range,
            "after": local_time(self.after),
            "before": local_time(self.before),
            "user": self.user,
            "offset": self.offset or "",
        }
        if self.parent:
            values[self.parent[0]] = self.parent[1]
        return encode_query(values, changes)

    @property
    def active(self) -> bool:
        """Any filter is set (the empty state then says so)."""
        return bool(self.query_string(offset=""))
