"""The operator console in process: sign in like a browser, read the test contract's attributes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Element:
    """A start tag: its name and attributes."""

    tag: str
    attrs: dict[str, str | None]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, dict(attrs)))


def elements(html: str, attribute: str, value: str | None = None) -> list[Element]:
    """Start tags carrying ``attribute`` (equal to ``value`` when given)."""
    collector = _Collector()
    collector.feed(html)
    return [
        e
        for e in collector.elements
        if attribute in e.attrs and (value is None or e.attrs[attribute] == value)
    ]


def saga_rows(html: str) -> dict[str, str]:
    """``data-saga-id`` → ``data-status`` of every saga row of a page."""
    return {
        str(e.attrs["data-saga-id"]): str(e.attrs["data-status"])
        for e in elements(html, "data-saga-id")
        if e.tag == "tr"
    }


def csrf_of(html: str) -> str:
    """The CSRF token a page embeds in its forms."""
    found = CSRF_INPUT.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_path: str = "") -> httpx.Response:
    """Load the sign-in form, then post the token with the form's CSRF token."""
    form = await client.get("/ui/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/ui/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": next_path},
    )


async def signed_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign in and return the session's CSRF token (from the overview page)."""
    answer = await sign_in(client, token)
    assert answer.status_code == 303, answer.text
    page = await client.get("/ui/")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
