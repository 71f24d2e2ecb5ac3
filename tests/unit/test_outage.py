"""Outage handling without I/O: which errors mean "database unavailable", backoff, bounded logs."""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg
import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from cloudphone.saga import DatabaseUnavailableError, is_database_unavailable
from cloudphone.saga.outage import Backoff, Outage
from cloudphone.saga.runner import StepTimeoutError
from cloudphone.saga.testing import ManualClock

LEASE = timedelta(seconds=2)


def wrapped(driver_error: Exception, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    """What SQLAlchemy raises for a driver error: a DBAPIError caused by it."""
    try:
        raise sa_exc.OperationalError(
            "SELECT 1", None, driver_error, connection_invalidated=invalidated
        ) from driver_error
    except sa_exc.DBAPIError as error:
        return error


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailableError("connect: refused"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.ConnectionFailureError("08006"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.InterfaceError("cannot call PreparedStatement.fetch(): connection is closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation"),
        wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection")),
        wrapped(ValueError("anything"), invalidated=True),
        wrapped(psycopg.OperationalError("connection failed: Connection refused")),
        wrapped(
            psycopg.OperationalError(
                'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                "FATAL:  the database system is starting up"
            )
        ),
        wrapped(psycopg.errors.AdminShutdown("terminating connection")),
        sa_exc.TimeoutError("QueuePool limit of size 20 overflow 0 reached"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_trouble_is_unavailable(error: Exception) -> None:
    assert is_database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        wrapped(asyncpg.exceptions.UntranslatableCharacterError("0x00")),
        wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")),
        wrapped(
            psycopg.OperationalError(
                'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                'FATAL:  password authentication failed for user "app"'
            )
        ),
        ConnectionRefusedError("an HTTP call, not the database"),
        StepTimeoutError("attempt exceeded the step timeout"),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_data_errors_and_other_failures_are_not(error: Exception) -> None:
    assert not is_database_unavailable(error)


def test_a_step_error_raised_while_handling_a_disconnect_is_unavailable() -> None:
    """A step that turned the driver's error into its own still failed for the database."""

    def record_refund() -> None:
        try:
            raise asyncpg.exceptions.AdminShutdownError("terminating connection")
        except asyncpg.PostgresError:
            raise RuntimeError("could not record the refund") from None

    with pytest.raises(RuntimeError) as raised:
        record_refund()
    assert is_database_unavailable(raised.value)


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, rand=lambda: 0.999)
    delays = [backoff.next() for _ in range(8)]
    assert delays[0] == pytest.approx(0.1, abs=0.001)
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(1.0, abs=0.001)
    assert Backoff(0.1, 1.0, rand=lambda: 0.0).next() == pytest.approx(0.05)
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1, abs=0.001)


def test_an_outage_is_logged_once_then_at_most_every_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    outage = Outage(clock, every=timedelta(seconds=30))
    caplog.set_level(logging.WARNING, "cloudphone.saga")
    for _ in range(50):  # fifty failed calls in 5 s: one line
        outage.failed("claims", ConnectionRefusedError("refused"))
        clock.advance(timedelta(milliseconds=100))
    assert len(caplog.records) == 1
    clock.advance(timedelta(seconds=30))
    outage.failed("lease renewal", ConnectionRefusedError("refused"))
    outage.failed("lease renewal", ConnectionRefusedError("refused"))
    assert len(caplog.records) == 2
    outage.ok()
    outage.ok()
    assert len(caplog.records) == 3
    assert "reachable again" in caplog.records[-1].getMessage()


def test_leases_lapsed_during_an_outage_get_one_lease_of_grace() -> None:
    clock = ManualClock()
    outage = Outage(clock)
    assert outage.takeover_before(clock.now(), LEASE) == clock.now()
    began = clock.now()
    outage.failed("claims", ConnectionRefusedError("refused"))
    clock.advance(timedelta(seconds=5))
    assert outage.takeover_before(clock.now(), LEASE) == began
    outage.ok()
    clock.advance(LEASE - timedelta(milliseconds=1))
    assert outage.takeover_before(clock.now(), LEASE) == began
    clock.advance(timedelta(milliseconds=1))
    assert outage.takeover_before(clock.now(), LEASE) == clock.now()


def test_a_failure_right_after_the_recovery_continues_the_same_outage() -> None:
    clock = ManualClock()
    outage = Outage(clock, flap=timedelta(seconds=5))
    began = clock.now()
    outage.failed("claims", ConnectionRefusedError("refused"))
    clock.advance(timedelta(seconds=1))
    outage.ok()  # a shutting-down server still answered one call
    clock.advance(timedelta(seconds=1))
    outage.failed("claims", ConnectionRefusedError("refused"))
    assert outage.down
    assert outage.began == began
    outage.ok()
    clock.advance(timedelta(seconds=6))
    outage.failed("claims", ConnectionRefusedError("refused"))
    assert outage.began == clock.now(), "a new outage, long after the last one"
