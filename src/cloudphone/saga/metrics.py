"""Prometheus collectors of the engine, registered in a registry the caller chooses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cloudphone.saga.state import SagaStatus

_STEP_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
_SAGA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)


class SagaMetrics:
    """The engine's metrics.

    Args:
        registry: Where to register; a fresh one per engine by default, so several engines
            (tests, benchmarks) never collide. The platform passes its own to serve /metrics.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.started = Counter("saga_started_total", "Sagas started.", ["saga_type"], registry=r)
        self.finished = Counter(
            "saga_finished_total",
            "Sagas that reached a final status.",
            ["saga_type", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "saga_duration_seconds",
            "Start to final status.",
            ["saga_type", "status"],
            buckets=_SAGA_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "saga_step_duration_seconds",
            "Duration of step attempts and compensations.",
            ["saga_type", "step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "saga_step_retries_total",
            "Step attempts scheduled for retry.",
            ["saga_type", "step"],
            registry=r,
        )
        self.compensations = Counter(
            "saga_compensations_total",
            "Compensations that ran to success.",
            ["saga_type", "step"],
            registry=r,
        )
        self.in_flight = Gauge(
            "saga_in_flight", "Runs this worker is driving now.", ["saga_type"], registry=r
        )
        self.takeovers = Counter(
            "saga_lease_takeovers_total",
            "Runs claimed after their owner's lease expired.",
            ["saga_type"],
            registry=r,
        )
        self.unknown_version = Gauge(
            "saga_runs_unknown_version",
            "Active runs whose (type, version) no live worker drives (refreshed by each live "
            "worker about once per lease; every worker reports the same count).",
            ["saga_type", "saga_version"],
            registry=r,
        )
        self.needs_attention = Gauge(
            "saga_needs_attention",
            "FAILED runs no operator has resolved, in the whole database (refreshed by workers).",
            ["saga_type"],
            registry=r,
        )

        self.group_members = Histogram(
            "saga_step_group_members",
            "Transactional steps of different runs that shared one PostgreSQL transaction, "
            "per step group.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.group_reruns = Counter(
            "saga_step_group_reruns_total",
            "Transactional step attempts run again alone after their step group rolled back.",
            registry=r,
        )

        self._children: dict[tuple[object, ...], Any] = {}
        self._unknown: set[tuple[str, int]] = set()
        self._attention_types: set[str] = set()

    def _child(self, metric: Any, *labels: str) -> Any:
        # labels() re-validates and hashes on every call; runs hit the same few children.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_started(self, saga_type: str) -> None:
        """A run was inserted."""
        self._child(self.started, saga_type).inc()

    def record_step(self, saga_type: str, step: str, outcome: str, seconds: float) -> None:
        """An attempt ended with ``outcome`` (success, failure, timeout, compensated, …)."""
        self._child(self.step_duration, saga_type, step, outcome).observe(seconds)

    def record_retry(self, saga_type: str, step: str) -> None:
        """A retry was scheduled."""
        self._child(self.retries, saga_type, step).inc()

    def record_compensation(self, saga_type: str, step: str) -> None:
        """A compensation succeeded."""
        self._child(self.compensations, saga_type, step).inc()

    def record_finished(self, saga_type: str, status: SagaStatus, seconds: float) -> None:
        """A run reached a final status (FAILED included)."""
        self._child(self.finished, saga_type, status.value).inc()
        self._child(self.duration, saga_type, status.value).observe(seconds)

    def set_needs_attention(self, counts: dict[str, int]) -> None:
        """Set the attention gauge from a fresh count (types no longer counted go to 0)."""
        for saga_type in self._attention_types - counts.keys():
            self._child(self.needs_attention, saga_type).set(0)
        for saga_type, count in counts.items():
            self._child(self.needs_attention, saga_type).set(count)
        self._attention_types = set(counts)

    def in_flight_of(self, saga_type: str) -> Any:
        """The in-flight gauge of one saga type."""
        return self._child(self.in_flight, saga_type)

    def set_unknown_versions(self, counts: Mapping[tuple[str, int], int]) -> None:
        """Orphaned runs per (type, version) now; pairs no longer orphaned drop to 0."""
        for saga_type, version in self._unknown - set(counts):
            self.unknown_version.labels(saga_type, str(version)).set(0)
        for (saga_type, version), count in counts.items():
            self.unknown_version.labels(saga_type, str(version)).set(count)
        self._unknown |= set(counts)

    def record_group(self, members: int) -> None:
        """A step group of ``members`` steps ended (see :mod:`.store.step_group`)."""
        self.group_members.observe(members)

    def record_group_rerun(self) -> None:
        """A transactional step's attempt runs again alone after its group rolled back."""
        self.group_reruns.inc()
