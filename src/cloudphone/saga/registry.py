"""The saga definitions an engine knows: by name (the newest version) and by (name, version)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from cloudphone.saga.definition import Saga, SagaKey
from cloudphone.saga.errors import SagaDefinitionError, UnknownSagaTypeError


class SagaRegistry(Mapping[SagaKey, Saga]):
    """Every registered definition, keyed by ``(name, version)``.

    Several versions of one saga type may be registered side by side (old runs drain on the
    version they started on); :attr:`latest` maps each name to its highest version, the one
    new starts take.

    Args:
        sagas: The definitions; each is validated, and a (name, version) given twice is an error.
    """

    def __init__(self, sagas: Iterable[Saga]) -> None:
        self._by_key: dict[SagaKey, Saga] = {}
        for saga in sagas:
            saga.validate()
            if saga.key in self._by_key:
                raise SagaDefinitionError(
                    f"saga {saga.name!r} version {saga.version} is registered twice"
                )
            self._by_key[saga.key] = saga
        self.latest: dict[str, Saga] = {}
        """The newest version of each saga type, by name."""
        for key in sorted(self._by_key):
            self.latest[key[0]] = self._by_key[key]

    def __getitem__(self, key: SagaKey) -> Saga:
        return self._by_key[key]

    def __iter__(self) -> Iterator[SagaKey]:
        return iter(sorted(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)

    def versions(self, name: str) -> list[int]:
        """The registered versions of ``name``, lowest first (empty when it is unknown)."""
        return [version for saga_type, version in self if saga_type == name]

    def require(self, name: str, version: int | None = None) -> Saga:
        """The definition of ``name`` at ``version`` (the newest when None).

        Raises:
            UnknownSagaTypeError: That name, or that version of it, is not registered.
        """
        saga = self.latest.get(name) if version is None else self._by_key.get((name, version))
        if saga is not None:
            return saga
        if name not in self.latest:
            known = ", ".join(sorted(self.latest)) or "none"
            raise UnknownSagaTypeError(f"unknown saga type {name!r}; known: {known}")
        versions = ", ".join(str(v) for v in self.versions(name))
        raise UnknownSagaTypeError(
            f"version {version} of saga type {name!r} is not registered here "
            f"(registered: {versions})"
        )


def describe(keys: Iterable[SagaKey]) -> Mapping[str, list[int]]:
    """Versions per name, for messages and listings (``{"refund": [1, 2]}``)."""
    grouped: dict[str, list[int]] = {}
    for name, version in sorted(keys):
        grouped.setdefault(name, []).append(version)
    return grouped
