"""Shared building blocks of every topic contract: base models, bounded types, codec.

Pure: no I/O. A consumer turns bytes into a model with `decode`, which raises only
`ContractError`; a producer turns a model into bytes with `encode`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

# Limits on free-form property maps (event props, personalisation context). They bound
# what one record can cost every consumer and the warehouse, whatever a client sends.
MAX_PROP_KEYS = 100  # keys in one dict, at each level
MAX_PROP_TOTAL_KEYS = 500  # keys across all levels
MAX_PROP_KEY_LENGTH = 128
MAX_PROP_DEPTH = 3  # the props dict itself is level 1
MAX_PROP_STRING_LENGTH = 1024
MAX_PROP_LIST_ITEMS = 100
# Integers outside int64 cannot be stored in ClickHouse Int64 nor written by orjson.
MIN_PROP_INT = -(2**63)
MAX_PROP_INT = 2**63 - 1

CONTRACT_VIOLATION = "contract_violation"

# C0 and C1 control characters: ids end up in keys, logs and URLs, where they do harm.
_NO_CONTROL_CHARS = r"^[^\x00-\x1F\x7F-\x9F]+$"

Platform = Literal["android", "ios", "web", "server"]

# NUL: Postgres text and JSONB cannot store it, so no contract string may carry one.
NO_NUL = r"^[^\x00]*$"

AppId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NO_CONTROL_CHARS)]
# `user_id`, or `d:` + a device id: room for the prefix on top of an Id.
UserKey = Annotated[str, StringConstraints(min_length=1, max_length=130, pattern=_NO_CONTROL_CHARS)]
TrackerToken = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
ShortStr = Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)]
LongStr = Annotated[str, StringConstraints(max_length=4096, pattern=NO_NUL)]
# IANA names are at most ~32 characters; 64 leaves room and matches the profile column.
Timezone = Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00-\x1F\x7F-\x9F]*$")]
ANONYMOUS_PREFIX = "d:"


def user_key_of(user_id: str | None, device_id: str | None) -> str:
    """The profile key: ``user_id`` when known, else ``d:<device_id>`` (DESIGN, Identity)."""
    if user_id is not None:
        return user_id
    if device_id is None:
        raise ValueError("a user key needs a user_id or a device_id")
    return ANONYMOUS_PREFIX + device_id


class ContractError(ValueError):
    """A payload does not satisfy its contract.

    `field` is the dotted path of the offending value (`props.color`, `content.body`),
    or None when the payload as a whole is unusable (not JSON, not an object).
    """

    def __init__(self, field: str | None, reason: str) -> None:
        # args kept as (field, reason) so the exception pickles and re-raises intact.
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def find_nul(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """The dotted path of the first string (or key) holding NUL in a JSON-like value."""
    if isinstance(value, str):
        return ".".join(path) if "\x00" in value else None
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(key, str) and "\x00" in key:
                return ".".join((*path, key))
            found = find_nul(child, (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = find_nul(child, (*path, str(index)))
            if found is not None:
                return found
    return None


def contract_violation(field: str, reason: str) -> PydanticCustomError:
    """An error for validators to raise whose `field` is appended to the pydantic loc.

    Lets a validator name a path pydantic cannot see (a key inside props, or one field
    of a cross-field rule); `decode` turns it into `ContractError(field=<loc>.<field>)`.
    """
    return PydanticCustomError(
        CONTRACT_VIOLATION, "{field}: {reason}", {"field": field, "reason": reason}
    )


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "naive_datetime",
            "Datetime must include a UTC offset (e.g. 2024-05-01T10:00:00Z); "
            "naive datetimes are ambiguous",
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00+05:00 has no UTC representation.
        raise PydanticCustomError(
            "datetime_range", "Datetime is out of range once converted to UTC"
        ) from None


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]


def _prop_error(path: tuple[str, ...], reason: str) -> PydanticCustomError:
    return contract_violation(".".join(path), reason)


_NUL = "String must not contain the NUL character"
_TOO_LONG = f"String should have at most {MAX_PROP_STRING_LENGTH} characters"
_TOO_MANY = f"Props should have at most {MAX_PROP_TOTAL_KEYS} keys in total"


def _check_prop_value(node: Any, path: tuple[str, ...], depth: int, seen: list[int]) -> None:
    """Walk one props value. Hot path (every record of every consumer): the key path is
    only joined into a string when there is an error to report."""
    kind = type(node)
    if kind is str:
        if len(node) > MAX_PROP_STRING_LENGTH:
            raise _prop_error(path, _TOO_LONG)
        if "\x00" in node:
            raise _prop_error(path, _NUL)
    elif kind is dict:
        if depth > MAX_PROP_DEPTH:
            raise _prop_error(path, f"Nesting deeper than {MAX_PROP_DEPTH} levels")
        items = node.items()
        if len(items) > MAX_PROP_KEYS:
            raise _prop_error(path, f"Object should have at most {MAX_PROP_KEYS} keys")
        seen[0] += len(items)
        if seen[0] > MAX_PROP_TOTAL_KEYS:
            raise _prop_error(path, _TOO_MANY)
        for key, child in items:
            if type(key) is not str:
                raise _prop_error(path, "Keys must be strings")
            if not 1 <= len(key) <= MAX_PROP_KEY_LENGTH or "\x00" in key:
                raise _prop_error(
                    (*path, key), f"Key should have 1 to {MAX_PROP_KEY_LENGTH} characters"
                )
            child_kind = type(child)
            if child_kind in _SCALARS_OK or (
                child_kind is str and len(child) <= MAX_PROP_STRING_LENGTH and "\x00" not in child
            ):
                continue
            _check_prop_value(child, (*path, key), depth + 1, seen)
    elif kind is list:
        if depth > MAX_PROP_DEPTH:
            raise _prop_error(path, f"Nesting deeper than {MAX_PROP_DEPTH} levels")
        if len(node) > MAX_PROP_LIST_ITEMS:
            raise _prop_error(path, f"List should have at most {MAX_PROP_LIST_ITEMS} items")
        for index, child in enumerate(node):
            child_kind = type(child)
            if child_kind in _SCALARS_OK or (
                child_kind is str and len(child) <= MAX_PROP_STRING_LENGTH and "\x00" not in child
            ):
                continue
            _check_prop_value(child, (*path, str(index)), depth + 1, seen)
    elif kind is float:
        if not math.isfinite(node):
            raise _prop_error(path, "Number must be finite (no NaN or Infinity)")
    elif kind is int:
        if not MIN_PROP_INT <= node <= MAX_PROP_INT:
            raise _prop_error(path, "Integer must fit in a signed 64-bit integer")
    elif node is not None and kind is not bool:
        raise _prop_error(path, f"Value of type {kind.__name__} is not JSON")


# Values that need no check at all (short-circuits the walk for the common case).
_SCALARS_OK = frozenset({bool, type(None)})


def check_props(value: object) -> object:
    """Check a props map against the MAX_PROP_* limits; returns it unchanged.

    Runs before the JSON type check, so an absurdly deep or wide input is refused by
    the cheap bounded walk (naming the offending key path in a `contract_violation`)
    before pydantic recurses into it. Non-dict input is left to the type check.
    """
    if isinstance(value, dict):
        _check_prop_value(value, (), 1, [0])
    return value


# The walk in check_props checks every value is JSON, so the type check after it is
# the cheap dict[str, Any] (pydantic's JsonValue union costs a Python call per node).
Props = Annotated[
    dict[str, Any],
    BeforeValidator(check_props),
    # JSON Schema cannot express all the limits; state them for other backends.
    Field(
        description=(
            f"Free-form JSON object: at most {MAX_PROP_KEYS} keys per object and "
            f"{MAX_PROP_TOTAL_KEYS} in total, keys 1-{MAX_PROP_KEY_LENGTH} characters, "
            f"nesting depth <= {MAX_PROP_DEPTH}, strings <= {MAX_PROP_STRING_LENGTH} "
            f"characters, lists <= {MAX_PROP_LIST_ITEMS} items, finite numbers, "
            "integers within int64."
        ),
        json_schema_extra={
            "additionalProperties": {
                "type": ["object", "array", "string", "number", "integer", "boolean", "null"]
            },
            "maxProperties": MAX_PROP_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_PROP_KEY_LENGTH},
        },
    ),
]


class Fragment(BaseModel):
    """A frozen value object nested inside a contract (no version of its own)."""

    # extra="ignore": a producer may add a field before its consumers know it.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class Contract(Fragment):
    """Base of every topic payload. Immutable; unknown fields are dropped on decode."""

    schema_version: int = Field(default=1, ge=1, le=2**31 - 1)


class TenantContract(Contract):
    """A payload scoped to one tenant app; every topic except the DLQ."""

    app_id: AppId


C = TypeVar("C", bound=Contract)


def encode(model: Contract) -> bytes:
    """Serialise a contract to JSON bytes (datetimes ISO-8601 in UTC). Never blocks.

    Raises orjson.JSONEncodeError (a TypeError) only for strings holding lone
    surrogates, which `decode` can never produce.
    """
    # orjson writes the Python-mode dump (datetimes, nested dicts) natively, a third
    # faster than pydantic's JSON mode; OPT_UTC_Z keeps the "...Z" form of UTC times.
    return orjson.dumps(model.model_dump(), option=orjson.OPT_UTC_Z)


def error_field(error: Any) -> tuple[str | None, str]:
    """The dotted field path and reason of one pydantic error dict, following the extra
    path a ``contract_violation`` carries."""
    loc = [str(part) for part in error["loc"]]
    reason = str(error["msg"])
    ctx = error.get("ctx") or {}
    if error["type"] == CONTRACT_VIOLATION:
        extra = str(ctx.get("field", ""))
        if extra:
            loc.append(extra)
        reason = str(ctx.get("reason", reason))
    return (".".join(loc) or None), reason


def decode(model_cls: type[C], data: bytes | str) -> C:
    """Parse and validate one record payload.

    Raises ContractError and nothing else, whatever the input: invalid JSON or a
    non-object top level gives `field=None`; a validation failure gives the first
    error's dotted path and message.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError(None, f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(
            None, f"invalid JSON: top level must be an object, got {type(raw).__name__}"
        )
    return validate(model_cls, raw)


def validate(model_cls: type[C], raw: dict[str, Any]) -> C:
    """Validate an already-parsed payload; raises ContractError naming the field."""
    try:
        return model_cls.model_validate(raw)
    except ValidationError as exc:
        field, reason = error_field(exc.errors(include_url=False)[0])
        raise ContractError(field, reason) from None
    except RecursionError:
        # Unknown fields may nest as deep as orjson allows; never let that escape.
        raise ContractError(None, "payload nested too deeply") from None
