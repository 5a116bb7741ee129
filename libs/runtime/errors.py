"""Domain errors. ``logic.py`` and ``store.py`` raise these; ``http.py`` maps them to
the JSON error envelope ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations


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
