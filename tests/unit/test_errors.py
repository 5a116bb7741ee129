"""Failure classification (``libs.runtime.errors``): what each driver's real exception
classes are taken for, the built-in rules for OS errors, cause chains and registered
classifiers. The runners' reactions to these answers are tested with the runners."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import aiokafka.errors as kafka_errors
import asyncpg.exceptions as pg
import httpx
import pytest
from clickhouse_connect.driver import exceptions as ch
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa

import libs.runtime.clickhouse
import libs.runtime.httpclient
import libs.runtime.kafka
import libs.runtime.postgres  # noqa: F401 — their import registers the drivers' classifiers
from libs.runtime import errors
from libs.runtime.errors import TransientError, is_poison, is_transient
from libs.schemas import ContractError

ROOT = Path(__file__).resolve().parents[2]


def caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def wrapped(orig: BaseException) -> sa.DBAPIError:
    """As SQLAlchemy raises a driver error: the DBAPI error in ``orig``."""
    return sa.DBAPIError("SELECT 1", {}, orig)  # type: ignore[arg-type]


def status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://provider.example/send")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


class Model(BaseModel):
    x: int


def validation_error() -> ValidationError:
    try:
        Model(x="nope")  # type: ignore[arg-type]
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


TRANSIENT = {
    # built in
    "TransientError": TransientError("db down"),
    "ConnectionRefusedError": ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    "ConnectionResetError": ConnectionResetError(),
    "BrokenPipeError": BrokenPipeError(),
    "TimeoutError": TimeoutError(),
    "OSError(ENETUNREACH)": OSError(errno.ENETUNREACH, "Network is unreachable"),
    "OSError(EHOSTUNREACH)": OSError(errno.EHOSTUNREACH, "No route to host"),
    "OSError(ETIMEDOUT) is a TimeoutError": OSError(errno.ETIMEDOUT, "timed out"),
    # asyncpg
    "asyncpg CannotConnectNowError (57P03)": pg.CannotConnectNowError(),
    "asyncpg AdminShutdownError (57P01)": pg.AdminShutdownError(),
    "asyncpg TooManyConnectionsError (53300)": pg.TooManyConnectionsError(),
    "asyncpg SerializationError (40001)": pg.SerializationError(),
    "asyncpg DeadlockDetectedError (40P01)": pg.DeadlockDetectedError(),
    "asyncpg ConnectionDoesNotExistError (08003)": pg.ConnectionDoesNotExistError(),
    "asyncpg ConnectionFailureError (08006)": pg.ConnectionFailureError(),
    "asyncpg InterfaceError (connection closed)": pg.InterfaceError("connection is closed"),
    # SQLAlchemy
    "sqlalchemy OperationalError": sa.OperationalError("SELECT 1", {}, Exception("gone")),
    "sqlalchemy InterfaceError": sa.InterfaceError("SELECT 1", {}, Exception("closed")),
    "sqlalchemy pool TimeoutError": sa.TimeoutError("QueuePool limit reached"),
    "sqlalchemy DBAPIError of a serialization failure": wrapped(pg.SerializationError()),
    "sqlalchemy DBAPIError, connection invalidated": sa.DBAPIError(
        "SELECT 1", {}, Exception("x"), connection_invalidated=True
    ),
    # aiokafka
    "aiokafka KafkaConnectionError": kafka_errors.KafkaConnectionError(),
    "aiokafka KafkaTimeoutError": kafka_errors.KafkaTimeoutError(),
    "aiokafka NodeNotReadyError": kafka_errors.NodeNotReadyError("node 0 not ready"),
    "aiokafka NotLeaderForPartitionError": kafka_errors.NotLeaderForPartitionError(),
    "aiokafka RequestTimedOutError": kafka_errors.RequestTimedOutError(),
    "aiokafka LeaderNotAvailableError": kafka_errors.LeaderNotAvailableError(),
    # clickhouse-connect
    "clickhouse OperationalError": ch.OperationalError("connection refused"),
    "clickhouse StreamFailureError": ch.StreamFailureError("stream broke off"),
    # httpx
    "httpx ConnectError": httpx.ConnectError("refused"),
    "httpx ConnectTimeout": httpx.ConnectTimeout("slow"),
    "httpx ReadTimeout": httpx.ReadTimeout("slow"),
    "httpx WriteTimeout": httpx.WriteTimeout("slow"),
    "httpx PoolTimeout": httpx.PoolTimeout("no connection free"),
    "httpx ReadError": httpx.ReadError("reset"),
    "httpx WriteError": httpx.WriteError("broken pipe"),
    "httpx RemoteProtocolError": httpx.RemoteProtocolError("peer closed the connection"),
    "httpx ProxyError": httpx.ProxyError("proxy down"),
    "httpx 503": status_error(503),
    "httpx 429": status_error(429),
    "httpx 502": status_error(502),
    "httpx 504": status_error(504),
    # a wrapper whose cause is transient
    "RuntimeError from ConnectionResetError": caused(RuntimeError("x"), ConnectionResetError()),
}

NOT_TRANSIENT = {
    # programming errors
    "KeyError": KeyError("bug"),
    "ValueError": ValueError("bug"),
    "RuntimeError": RuntimeError("bug"),
    # a bare OSError, and those retrying does not cure
    "OSError()": OSError(),
    "OSError(ENOSPC)": OSError(errno.ENOSPC, "No space left on device"),
    "OSError(EIO)": OSError(errno.EIO, "Input/output error"),
    "OSError(EROFS)": OSError(errno.EROFS, "Read-only file system"),
    "OSError(EMFILE)": OSError(errno.EMFILE, "Too many open files"),
    "PermissionError": PermissionError(errno.EACCES, "denied"),
    "FileNotFoundError": FileNotFoundError(errno.ENOENT, "missing"),
    "RuntimeError from OSError(ENOSPC)": caused(RuntimeError("x"), OSError(errno.ENOSPC, "full")),
    # asyncpg: a refused value, a bad query, a cancelled statement
    "asyncpg UniqueViolationError (23505)": pg.UniqueViolationError(),
    "asyncpg InvalidTextRepresentationError (22P02)": pg.InvalidTextRepresentationError(),
    "asyncpg UndefinedTableError (42P01)": pg.UndefinedTableError(),
    "asyncpg QueryCanceledError (57014)": pg.QueryCanceledError(),
    # SQLAlchemy: the DBAPI error's SQLSTATE decides, even over a transient cause
    "sqlalchemy IntegrityError": sa.IntegrityError("INSERT", {}, pg.UniqueViolationError()),
    "sqlalchemy DataError": sa.DataError("INSERT", {}, pg.InvalidTextRepresentationError()),
    "sqlalchemy ProgrammingError": sa.ProgrammingError("SELECT", {}, pg.UndefinedTableError()),
    "sqlalchemy DBAPIError(42P01) caused by a reset": caused(
        wrapped(pg.UndefinedTableError()), ConnectionResetError()
    ),
    # aiokafka's refusals of a record
    "aiokafka MessageSizeTooLargeError": kafka_errors.MessageSizeTooLargeError("too big"),
    "aiokafka TopicAuthorizationFailedError": kafka_errors.TopicAuthorizationFailedError(),
    "aiokafka CommitFailedError": kafka_errors.CommitFailedError("rebalanced"),
    # clickhouse-connect: a bad query
    "clickhouse DatabaseError": ch.DatabaseError("Code: 60. Unknown table"),
    "clickhouse ProgrammingError": ch.ProgrammingError("bad query"),
    "clickhouse DataError": ch.DataError("bad value"),
    # httpx: a request built wrong, an answer that is final
    "httpx LocalProtocolError": httpx.LocalProtocolError("bad header"),
    "httpx UnsupportedProtocol": httpx.UnsupportedProtocol("ftp://"),
    "httpx InvalidURL": httpx.InvalidURL("not a url"),
    "httpx 400": status_error(400),
    "httpx 401": status_error(401),
    "httpx 500": status_error(500),
    # data errors
    "ValidationError": validation_error(),
    "ContractError": ContractError(None, "not JSON"),
}


@pytest.mark.parametrize("exc", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


POISON = {
    "ValidationError": validation_error(),
    "ContractError": ContractError("props.x", "not a number"),
    "OverflowError": OverflowError(),
    "UnicodeDecodeError": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    "sqlalchemy IntegrityError": sa.IntegrityError("INSERT", {}, pg.UniqueViolationError()),
    "sqlalchemy DataError": sa.DataError("INSERT", {}, pg.InvalidTextRepresentationError()),
    "sqlalchemy DBAPIError of a 22P02": wrapped(pg.InvalidTextRepresentationError()),
    "sqlalchemy DBAPIError of a 23503": wrapped(pg.ForeignKeyViolationError()),
    "asyncpg UniqueViolationError (23505)": pg.UniqueViolationError(),
    "asyncpg NumericValueOutOfRangeError (22003)": pg.NumericValueOutOfRangeError(),
    "asyncpg CharacterNotInRepertoireError (22021)": pg.CharacterNotInRepertoireError(),
    "RuntimeError from a ValidationError": caused(RuntimeError("x"), validation_error()),
}

NOT_POISON = {
    "KeyError": KeyError("bug"),
    "TransientError": TransientError(),
    "ConnectionResetError": ConnectionResetError(),
    "sqlalchemy OperationalError": sa.OperationalError("q", {}, Exception("gone")),
    "sqlalchemy ProgrammingError": sa.ProgrammingError("SELECT", {}, pg.UndefinedTableError()),
    "asyncpg SerializationError": pg.SerializationError(),
    "asyncpg UndefinedColumnError": pg.UndefinedColumnError(),
    "aiokafka MessageSizeTooLargeError": kafka_errors.MessageSizeTooLargeError("too big"),
    "httpx 400": status_error(400),
    "OSError(ENOSPC)": OSError(errno.ENOSPC, "full"),
}


@pytest.mark.parametrize("exc", POISON.values(), ids=POISON.keys())
def test_poison(exc: BaseException) -> None:
    assert is_poison(exc)


@pytest.mark.parametrize("exc", NOT_POISON.values(), ids=NOT_POISON.keys())
def test_not_poison(exc: BaseException) -> None:
    assert not is_poison(exc)


def test_a_cycle_of_causes_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert not is_transient(a)
    assert not is_poison(a)


class QuotaExceeded(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


def test_a_registered_classifier_decides_for_its_exceptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(errors, "_TRANSIENT", list(errors._TRANSIENT))
    monkeypatch.setattr(errors, "_POISON", list(errors._POISON))
    assert not is_transient(QuotaExceeded(1))

    def quota(exc: BaseException) -> bool | None:
        return exc.retry_after_s < 60 if isinstance(exc, QuotaExceeded) else None

    assert errors.register_transient(quota) is quota
    errors.register_transient(quota)  # again: still one entry
    assert errors._TRANSIENT.count(quota) == 1
    assert is_transient(QuotaExceeded(1))
    assert not is_transient(QuotaExceeded(3600))
    # Through a wrapper, and without changing anything else's answer.
    assert is_transient(caused(RuntimeError("x"), QuotaExceeded(1)))
    assert not is_transient(KeyError("bug"))
    assert is_transient(pg.SerializationError())

    errors.register_poison(lambda exc: True if isinstance(exc, QuotaExceeded) else None)
    assert is_poison(QuotaExceeded(1))
    assert not is_poison(KeyError("bug"))


def test_the_built_in_rules_come_before_any_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_TRANSIENT", [lambda exc: False])
    assert is_transient(ConnectionResetError())
    assert not is_transient(pg.SerializationError())


PROBE = """
import json, sys
import asyncpg.exceptions
import libs.runtime.errors as errors
before = errors.is_transient(asyncpg.exceptions.SerializationError())
import libs.runtime.postgres
after = errors.is_transient(asyncpg.exceptions.SerializationError())
print(json.dumps([before, after]))
"""


def test_drivers_are_known_by_registration_not_by_module_name() -> None:
    """In a fresh interpreter, asyncpg's serialization failure is transient only once the
    kit's Postgres module (which registers the classifier) is imported."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [False, True]


RESOURCES_PROBE = """
import json
import libs.runtime.errors as errors
import libs.runtime.resources
print(json.dumps(sorted({c.__module__ for c in errors._TRANSIENT})))
"""


def test_a_process_registers_every_drivers_classifier() -> None:
    """Every composed process imports ``libs.runtime.resources``, which brings in the kit
    module of each driver it uses, and so each driver's classifier."""
    out = subprocess.run(
        [sys.executable, "-c", RESOURCES_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [
        "libs.runtime.clickhouse",
        "libs.runtime.httpclient",
        "libs.runtime.kafka",
        "libs.runtime.postgres",
    ]
