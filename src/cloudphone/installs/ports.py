"""What installs need from the apps service, as a narrow port (installs never import apps).

:class:`ApkSource` answers two questions about an application, for a caller: may they put it
on a device (and what is it), and what are its bytes. ``cloudphone.platform`` wires it to the
apps service; tests may give any object with these two methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cloudphone.domain import Principal


class ApkInfo(Protocol):
    """The facts about an APK an install needs (the apps service's record has them)."""

    @property
    def id(self) -> str:
        """Application record id."""
        ...

    @property
    def package_name(self) -> str:
        """Android package name."""
        ...

    @property
    def version_code(self) -> int:
        """Android version code."""
        ...

    @property
    def version_name(self) -> str | None:
        """Human version string."""
        ...

    @property
    def size(self) -> int:
        """Bytes of the APK."""
        ...

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the APK, as recorded when it was uploaded."""
        ...


class ApkSource(Protocol):
    """Readable APKs, for a caller.

    Errors are :mod:`cloudphone.domain`'s: ``NotFoundError`` (no such application, or not one
    the caller may read; ``object_missing`` when its bytes are gone), ``ConflictError`` (it is
    not AVAILABLE), ``UnavailableError`` (storage cannot be reached: try again later).
    """

    async def describe(self, app_id: str, principal: Principal) -> ApkInfo:
        """The application, if ``principal`` may install it."""
        ...

    def open(
        self, app_id: str, principal: Principal
    ) -> AbstractAsyncContextManager[tuple[ApkInfo, AsyncIterator[bytes]]]:
        """``async with source.open(app_id, who) as (info, chunks):`` its record and bytes."""
        ...
