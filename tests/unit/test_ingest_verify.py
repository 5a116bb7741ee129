"""``POST /v1/s2s/verify`` bodies, and the envelope check the rate limit counts with."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.runtime.errors import InvalidInput
from libs.schemas import UserVerified
from services.ingest.logic import (
    MAX_FUTURE,
    VERIFICATION_NAMESPACE,
    batch_events,
    parse_verification,
    verification_id,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def verify(body: Any, app_id: str = "app_1") -> UserVerified:
    return parse_verification(body, app_id=app_id, now=NOW)


def field_of(body: Any) -> str | None:
    with pytest.raises(InvalidInput) as info:
        verify(body)
    assert info.value.message
    return info.value.field


def test_full_body() -> None:
    v = verify(
        {"user_id": "u_1", "device_id": "dev_1", "ts": "2024-04-01T10:00:00+03:30", "method": "otp"}
    )
    assert (v.app_id, v.user_id, v.device_id, v.method) == ("app_1", "u_1", "dev_1", "otp")
    assert v.ts == datetime(2024, 4, 1, 6, 30, tzinfo=UTC)
    assert v.verification_id.startswith("v_")


def test_ts_defaults_to_now_and_device_and_method_are_optional() -> None:
    v = verify({"user_id": "u_1"})
    assert v.ts == NOW and v.device_id is None and v.method is None


def test_retry_is_idempotent_and_ids_differ_by_app_user_and_ts() -> None:
    body = {"user_id": "u_1", "ts": "2024-04-01T10:00:00Z"}
    first = verify(body).verification_id
    assert verify(dict(body)).verification_id == first
    # The same instant in another offset is the same verification.
    assert verify({"user_id": "u_1", "ts": "2024-04-01T13:30:00+03:30"}).verification_id == first
    # device and method do not change what was verified
    assert verify({**body, "device_id": "d", "method": "otp"}).verification_id == first
    assert verify(body, app_id="app_2").verification_id != first
    assert verify({**body, "user_id": "u_2"}).verification_id != first
    assert verify({**body, "ts": "2024-04-01T10:00:01Z"}).verification_id != first


def test_verification_id_is_stable_across_releases() -> None:
    # Pinned: a changed namespace or format would break idempotency of in-flight retries.
    ts = datetime(2024, 4, 1, 10, tzinfo=UTC)
    assert verification_id("app_1", "u_1", ts) == "v_" + str(
        uuid.uuid5(VERIFICATION_NAMESPACE, "app_1\x1fu_1\x1f2024-04-01T10:00:00+00:00")
    )
    assert VERIFICATION_NAMESPACE == uuid.UUID("5d0c6b1e-3f49-4c1b-9a51-7f3e0f1b2c84")


def test_any_past_ts_is_accepted() -> None:
    assert verify({"user_id": "u", "ts": "2001-01-01T00:00:00Z"}).ts.year == 2001


def test_future_ts_bound() -> None:
    assert verify({"user_id": "u", "ts": (NOW + MAX_FUTURE).isoformat()}).ts == NOW + MAX_FUTURE
    late = (NOW + MAX_FUTURE + timedelta(seconds=1)).isoformat()
    assert field_of({"user_id": "u", "ts": late}) == "ts"


@pytest.mark.parametrize("body", [None, [], "u_1", 1, True])
def test_body_must_be_an_object(body: Any) -> None:
    assert field_of(body) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "   "}, "user_id"),
        ({"user_id": "null"}, "user_id"),
        ({"user_id": "Undefined"}, "user_id"),
        ({"user_id": "[object Object]"}, "user_id"),
        ({"user_id": "GUEST"}, "user_id"),
        ({"user_id": "0"}, "user_id"),
        ({"user_id": "d:dev_1"}, "user_id"),
        ({"user_id": "u" * 129}, "user_id"),
        ({"user_id": "u\n1"}, "user_id"),
        ({"user_id": "u", "device_id": ""}, "device_id"),
        ({"user_id": "u", "device_id": 5}, "device_id"),
        ({"user_id": "u", "ts": "yesterday"}, "ts"),
        ({"user_id": "u", "ts": "2024-05-01T10:00:00"}, "ts"),
        ({"user_id": "u", "ts": 1714560000}, "ts"),
        ({"user_id": "u", "method": "m" * 257}, "method"),
        ({"user_id": "u", "method": 1}, "method"),
        ({"user_id": "u", "app_id": "other"}, "app_id"),
        ({"user_id": "u", "verification_id": "mine"}, "verification_id"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], field: str) -> None:
    assert field_of(body) == field


def test_persian_method_round_trips() -> None:
    assert verify({"user_id": "u", "method": "احراز هویت حضوری"}).method == "احراز هویت حضوری"


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(["user_id", "device_id", "ts", "method", "x"]),
        st.none() | st.text(max_size=30) | st.integers() | st.booleans(),
        max_size=5,
    )
)
def test_junk_raises_only_invalid_input(body: dict[str, Any]) -> None:
    try:
        v = verify(body)
    except InvalidInput:
        return
    assert v.user_id == body["user_id"]


# --- the batch envelope ---------------------------------------------------------------


def test_batch_events_returns_the_list() -> None:
    events = [{"a": 1}, "junk"]
    assert batch_events({"events": events}) is events


@pytest.mark.parametrize("body", [None, [], {}, {"events": {}}, {"events": "x"}])
def test_batch_events_refuses_a_bad_envelope(body: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        batch_events(body)
    assert info.value.field == "events"


def test_batch_events_honours_the_configured_maximum() -> None:
    assert len(batch_events({"events": [{}] * 3}, max_batch=3)) == 3
    with pytest.raises(InvalidInput) as info:
        batch_events({"events": [{}] * 4}, max_batch=3)
    assert "3" in info.value.message
