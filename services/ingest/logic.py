"""Ingest rules: turn an SDK or server batch into contracts, event by event. Pure.

Partial acceptance: every event is validated on its own (the contract, the user-id rule
and the shape of reserved ``$`` events in ``reserved.py``); valid ones become ``Event``
records (and ``InstallReported`` for ``$install``), invalid ones are reported by index
with the field and the reason. Nothing valid is dropped because a neighbour was bad.

Server-to-server verifications (``UserVerified``) are built here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from libs.runtime.errors import InvalidInput
from libs.schemas import ContractError, Event, InstallReported, UserVerified, validate
from libs.schemas.base import ANONYMOUS_PREFIX
from services.ingest.reserved import check_event, check_user_id

MAX_BATCH = 500
MAX_EVENT_AGE = timedelta(days=7)
MAX_FUTURE = timedelta(hours=1)
# One event as a Kafka record: far below the broker's 1 MB request limit, so that a
# batch of large events can never make a publish fail.
MAX_EVENT_BYTES = 64 * 1024
DEVICE_FIELDS = (
    "device_id",
    "user_id",
    "adid",
    "platform",
    "os_version",
    "device_model",
    "app_version",
    "locale",
    "timezone",
    "session_id",
)
EVENT_FIELDS = frozenset({"event_id", "name", "ts", "props", "revenue", "currency", *DEVICE_FIELDS})


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str | None
    reason: str


@dataclass(slots=True)
class BatchResult:
    events: list[Event] = field(default_factory=list)
    installs: list[InstallReported] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Repeats of an event_id already accepted in the same batch (an SDK retry that
    # re-sent a queue): dropped, not rejected — the first copy stands for them.
    duplicates: int = 0
    # ``encode`` of each accepted event (made for the size check), for the producer.
    encoded: list[bytes] = field(default_factory=list)


def parse_time(value: Any, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput("must be an ISO-8601 timestamp with a time zone", field=field_name)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            "must be an ISO-8601 timestamp with a time zone", field=field_name
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput("needs a time zone offset (e.g. Z)", field=field_name)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("is out of the supported date range", field=field_name) from None


def clock_skew(sent_at: datetime | None, received_at: datetime) -> timedelta:
    """How far the device clock is behind the server: added to every client time."""
    return received_at - sent_at if sent_at is not None else timedelta(0)


def batch_events(body: Any, *, max_batch: int = MAX_BATCH) -> list[Any]:
    """The raw ``events`` list of a batch body, checked as an envelope only.

    Raises ``InvalidInput`` (field ``events``) for a body that is not an object, has no
    events list, or has more than ``max_batch`` events. Cheap: the API calls it to count
    a request's events for the rate limit before any event is parsed.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("body must be a JSON object with an events list", field="events")
    events = body.get("events")
    if not isinstance(events, list):
        raise InvalidInput("must be a list of events", field="events")
    if len(events) > max_batch:
        raise InvalidInput(f"at most {max_batch} events per request", field="events")
    return events


def parse_batch(
    body: Any,
    *,
    app_id: str,
    received_at: datetime,
    ip: str | None,
    user_agent: str | None,
    source: str = "sdk",
    max_batch: int = MAX_BATCH,
    max_age: timedelta | None = MAX_EVENT_AGE,
) -> BatchResult:
    """Validate a ``{"sent_at", "events": [...]}`` body.

    Raises ``InvalidInput`` only for an unusable envelope (not an object, no events list,
    too many events, bad ``sent_at``); per-event problems land in ``rejected``.
    ``max_age=None`` accepts any past ``ts`` (server-to-server backfill).
    """
    events = batch_events(body, max_batch=max_batch)
    sent_at = parse_time(body["sent_at"], "sent_at") if body.get("sent_at") is not None else None
    skew = clock_skew(sent_at, received_at)
    result = BatchResult()
    seen: set[str] = set()
    for index, raw in enumerate(events):
        try:
            event = _event(
                raw,
                app_id=app_id,
                received_at=received_at,
                skew=skew,
                ip=ip,
                source=source,
                max_age=max_age,
            )
        except InvalidInput as exc:
            result.rejected.append(Rejection(index, exc.field, exc.message))
            continue
        value = encode_event(event)
        if len(value) > MAX_EVENT_BYTES:
            result.rejected.append(
                Rejection(index, "props", f"event is larger than {MAX_EVENT_BYTES} bytes encoded")
            )
            continue
        if event.event_id in seen:
            result.duplicates += 1
            continue
        seen.add(event.event_id)
        result.events.append(event)
        result.encoded.append(value)
        if event.name == "$install":
            try:
                result.installs.append(install_from(event, user_agent=user_agent))
            except InvalidInput as exc:
                result.events.pop()
                result.encoded.pop()
                result.rejected.append(Rejection(index, exc.field, exc.message))
    return result


def encode_event(event: Event) -> bytes:
    """``encode(event)`` without pydantic's dump, a third of ingest's encoding cost: an
    ``Event``'s fields hold JSON values and datetimes only (no nested model, no custom
    serializer), so its field dict, in field order, dumps to the same bytes. A unit
    test holds the two equal."""
    return orjson.dumps(event.__dict__, option=orjson.OPT_UTC_Z)


def _event(
    raw: Any,
    *,
    app_id: str,
    received_at: datetime,
    skew: timedelta,
    ip: str | None,
    source: str,
    max_age: timedelta | None,
) -> Event:
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise InvalidInput("an event must be a JSON object", field=None)
    if not EVENT_FIELDS.issuperset(raw):
        raise InvalidInput(
            "unknown field; custom data goes in props", field=sorted(set(raw) - EVENT_FIELDS)[0]
        )
    try:
        ts = parse_time(raw.get("ts"), "ts") + skew
    except OverflowError:
        raise InvalidInput("is out of the supported date range", field="ts") from None
    if ts > received_at + MAX_FUTURE:
        raise InvalidInput("is in the future even after clock-skew correction", field="ts")
    if max_age is not None and ts < received_at - max_age:
        raise InvalidInput(
            f"is older than {max_age.days} days; load history through /v1/s2s/events", field="ts"
        )
    # Every key is an EVENT_FIELD (checked above). A null optional field is left out (its
    # default: None, or {} for props); event_id and name are always given, so a null
    # one is reported as such rather than as missing.
    data = {k: v for k, v in raw.items() if v is not None}
    data["event_id"] = raw.get("event_id")
    data["name"] = raw.get("name")
    data["ts"] = ts
    data["app_id"] = app_id
    data["received_at"] = received_at
    data["source"] = source
    data["ip"] = ip
    try:
        event = validate(Event, data)
    except ContractError as exc:
        raise InvalidInput(exc.reason, field=exc.field) from None
    check_event(event)
    return event


def install_from(event: Event, *, user_agent: str | None) -> InstallReported:
    """The ``InstallReported`` of an ``$install`` event. The store referrer, the download
    start (``install_begin_ts``) and the SDK's device checks (``is_emulator``,
    ``is_rooted``, booleans) ride in props. Raises ``InvalidInput`` naming the field."""
    if event.device_id is None:
        raise InvalidInput("an $install needs a device_id", field="device_id")
    referrer = event.props.get("referrer")
    if referrer is not None and not isinstance(referrer, str):
        raise InvalidInput("must be the store's referrer string", field="props.referrer")
    begin = event.props.get("install_begin_ts")
    begin_ts = parse_time(begin, "props.install_begin_ts") if begin is not None else None
    flags: dict[str, bool] = {}
    for flag in ("is_emulator", "is_rooted"):
        value = event.props.get(flag, False)
        if not isinstance(value, bool):
            raise InvalidInput(
                "must be true or false (the SDK's device check)", field=f"props.{flag}"
            )
        flags[flag] = value
    return InstallReported(
        app_id=event.app_id,
        event_id=event.event_id,
        device_id=event.device_id,
        user_id=event.user_id,
        adid=event.adid,
        ts=event.ts,
        received_at=event.received_at,
        platform=event.platform,
        os_version=event.os_version,
        device_model=event.device_model,
        app_version=event.app_version,
        locale=event.locale,
        ip=event.ip,
        user_agent=user_agent[:2048] if user_agent else None,
        referrer=referrer,
        install_begin_ts=begin_ts,
        **flags,
    )


VERIFY_FIELDS = frozenset({"user_id", "device_id", "ts", "method"})
# Fixed forever: verification ids of retried calls must stay equal across releases.
VERIFICATION_NAMESPACE = uuid.UUID("5d0c6b1e-3f49-4c1b-9a51-7f3e0f1b2c84")


def verification_id(app_id: str, user_id: str, ts: datetime) -> str:
    """Deterministic id of a verification: a retried call publishes the same id, which
    consumers deduplicate. ``ts`` is compared in UTC to the microsecond."""
    name = f"{app_id}\x1f{user_id}\x1f{ts.astimezone(UTC).isoformat()}"
    return "v_" + str(uuid.uuid5(VERIFICATION_NAMESPACE, name))


def parse_verification(body: Any, *, app_id: str, now: datetime) -> UserVerified:
    """A ``POST /v1/s2s/verify`` body as ``UserVerified``.

    ``ts`` defaults to ``now`` (then a retry is a new verification: send ``ts`` to make
    retries idempotent); any past ``ts`` is accepted, the future only within
    ``MAX_FUTURE``. Raises ``InvalidInput`` naming the field; placeholder user ids are
    refused like on events.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("body must be a JSON object with a user_id", field=None)
    unknown = sorted(set(body) - VERIFY_FIELDS)
    if unknown:
        raise InvalidInput(
            "unknown field; expected user_id, device_id, ts, method", field=unknown[0]
        )
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise InvalidInput("a verification needs the user_id (a string)", field="user_id")
    check_user_id(user_id)
    ts = parse_time(body["ts"], "ts") if body.get("ts") is not None else now
    if ts > now + MAX_FUTURE:
        raise InvalidInput("is in the future", field="ts")
    try:
        verified = validate(
            UserVerified,
            {
                "app_id": app_id,
                "verification_id": verification_id(app_id, user_id, ts),
                "user_id": user_id,
                "device_id": body.get("device_id"),
                "ts": ts,
                "method": body.get("method"),
            },
        )
    except ContractError as exc:
        raise InvalidInput(exc.reason, field=exc.field) from None
    if verified.user_id.startswith(ANONYMOUS_PREFIX):
        raise InvalidInput(f"must not start with {ANONYMOUS_PREFIX!r}", field="user_id")
    return verified
