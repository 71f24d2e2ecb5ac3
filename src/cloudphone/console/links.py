"""Links from a saga to the business resources its data names (payment, refund, app, device).

A resource with a console page links to it; the others link to the sagas search for their id
until their page exists. Seam: the payments/refunds and apps pages come with the billing and
apps list use cases; give their kinds a page below when they land.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

PAGES: dict[str, Callable[[str], str] | None] = {
    "device": lambda device_id: f"/devices/{quote(device_id, safe='')}",
    "payment": None,  # seam: the payments page
    "refund": None,  # seam: the refunds page
    "order": None,
    "app": None,  # seam: the apps page
}
"""Console path of each resource kind's page (None: no page yet, link to its sagas)."""

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


def resource_links(data: Mapping[str, Any]) -> list[ResourceLink]:
    """The resources named by a saga's data, in the order of :data:`PAGES`."""
    links = []
    for key, kind in DATA_KEYS.items():
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        page = PAGES[kind]
        path = page(value) if page else f"/sagas?{urlencode({'q': value})}"
        links.append(ResourceLink(kind, value, path, page is not None))
    return links
