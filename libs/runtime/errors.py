"""Domain errors, and the classification of failures.

``logic.py`` and ``store.py`` raise the domain errors; ``http.py`` maps them to the JSON
error envelope ``{"error": {"code", "message", "field"}}``. ``is_transient`` and
``is_poison`` decide what the runners do with a failure (retry, dead-letter, crash).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from pydantic import ValidationError

from libs.schemas.base import ContractError

# --- Failure classification -------------------------------------------------------------
#
# The consumer runner, the timed-work runner and the HTTP error handler ask these two
# questions of every failure. The kit module that wraps a driver registers what it knows
# of the driver's exceptions (``postgres.py``: asyncpg and SQLAlchemy; ``kafka.py``:
# aiokafka; ``clickhouse.py``: clickhouse-connect; ``httpclient.py``: httpx), so this
# module imports no driver and stays importable from pure code.

Classifier = Callable[[BaseException], bool | None]
"""Answers True or False for the exceptions it knows, None for the others."""

_TRANSIENT: list[Classifier] = []
_POISON: list[Classifier] = []

# Network conditions the OS reports as a plain OSError (no ConnectionError subclass) that
# pass when the peer or the route comes back (refused, reset and timed out are already
# ConnectionError and TimeoutError). Anything else of OSError (no space left on
# the device, a permission, a missing file) is not cured by retrying the batch.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
    }
)


class TransientError(Exception):
    """Raise from a handler to ask for a retry of the whole batch (the store it needs is
    down, an acknowledgement was lost …)."""


def register_transient(classifier: Classifier) -> Classifier:
    """Add ``classifier`` to those ``is_transient`` consults (in registration order, the
    first answer that is not None wins). Called at import time by the kit module of a
    driver; registering the same function again changes nothing. Returns it (a decorator)."""
    if classifier not in _TRANSIENT:
        _TRANSIENT.append(classifier)
    return classifier


def register_poison(classifier: Classifier) -> Classifier:
    """``register_transient`` for ``is_poison``."""
    if classifier not in _POISON:
        _POISON.append(classifier)
    return classifier


def is_transient(exc: BaseException) -> bool:
    """True for failures that retrying the same work can cure: a store or broker down or
    unreachable, a timeout, a serialization failure, ``TransientError``.

    Built in: ``TransientError``, ``ConnectionError``, ``TimeoutError`` and an ``OSError``
    whose errno is a network condition; a bare ``OSError`` is not transient. Then the
    registered classifiers; with no verdict, the exception's ``__cause__`` is asked
    (drivers wrap the socket error they got). Pure, never raises.
    """
    return _classify(exc, _TRANSIENT, _builtin_transient, set())


def is_poison(exc: BaseException) -> bool:
    """True for failures caused by the data of a record, which retrying cannot cure and
    which must not stop the partition: a contract that did not validate, a number that
    overflowed, text that does not encode, and what the registered classifiers say (the
    store refused a value: SQLSTATE classes 22 and 23). Falls back on ``__cause__`` like
    ``is_transient``. Pure, never raises."""
    return _classify(exc, _POISON, _builtin_poison, set())


def _builtin_transient(exc: BaseException) -> bool | None:
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    return None


def _builtin_poison(exc: BaseException) -> bool | None:
    if isinstance(exc, ContractError | ValidationError | OverflowError | UnicodeError):
        return True
    return None


def _classify(
    exc: BaseException,
    classifiers: list[Classifier],
    builtin: Classifier,
    seen: set[int],
) -> bool:
    seen.add(id(exc))
    verdict = builtin(exc)
    for classifier in classifiers:
        if verdict is not None:
            break
        verdict = classifier(exc)
    if verdict is not None:
        return verdict
    cause = exc.__cause__
    return (
        cause is not None and id(cause) not in seen and _classify(cause, classifiers, builtin, seen)
    )


# --- Domain errors ----------------------------------------------------------------------


class HodhodError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(HodhodError):
    status = 422
    code = "invalid"


class Unauthorized(HodhodError):
    status = 401
    code = "unauthorized"


class Forbidden(HodhodError):
    status = 403
    code = "forbidden"


class NotFound(HodhodError):
    status = 404
    code = "not_found"


class Conflict(HodhodError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HodhodError):
    status = 413
    code = "payload_too_large"


class Unavailable(HodhodError):
    status = 503
    code = "unavailable"
