"""Links from a saga to the business resources its data names (payment, refund, app, device).

Every kind has a console page: a payment, a refund, an app and a device their own; an order
the list of its payments (which links to the order's refunds in turn). The sagas search
(:mod:`.search`) links what it finds to the same pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode


def _path(prefix: str) -> Callable[[str], str]:
    return lambda resource_id: f"{prefix}/{quote(resource_id, safe='')}"


PAGES: dict[str, Callable[[str], str] | None] = {
    "device": _path("/devices"),
    "payment": _path("/payments"),
    "refund": _path("/refunds"),
    "order": lambda order_id: f"/payments?{urlencode({'order_id': order_id})}",
    "app": _path("/apps"),
}
"""Console path of each resource kind's page (None: no page, link to its sagas instead)."""

DATA_KEYS = {f"{kind}_id": kind for kind in PAGES}
"""Saga data keys naming a resource (``device_id`` → ``device``)."""


@dataclass(frozen=True)
class ResourceLink:
    """A link to a business resource.

    Attributes:
        kind: ``payment``, ``refund``, ``order``, ``app`` or ``device``.
        resource_id: Its id.
        path: Console path (relative to the console's base).
        has_page: False when the link goes to the sagas search instead of a page.
    """

    kind: str
    resource_id: str
    path: str
    has_page: bool


def page_of(kind: str, resource_id: str) -> str | None:
    """The console path of a resource's page, or None if its kind has none."""
    page = PAGES.get(kind)
    return page(resource_id) if page else None


def resource_links(data: Mapping[str, Any]) -> list[ResourceLink]:
    """The resources named by a saga's data, in the order of :data:`PAGES`."""
    links = []
    for key, kind in DATA_KEYS.items():
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        path = page_of(kind, value)
        links.append(
            ResourceLink(kind, value, path or f"/sagas?{urlencode({'q': value})}", path is not None)
        )
    return links
