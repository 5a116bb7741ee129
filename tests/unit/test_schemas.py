"""Topic contracts: codec round trips, rejections naming the field, key rules."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from libs.schemas import (
    ALL_TOPICS,
    CONTRACTS,
    ClickRecorded,
    ConfigChanged,
    ContractError,
    DeliveryReceipt,
    DlqRecord,
    Event,
    InstallReported,
    SegmentChanged,
    SendJob,
    UserAttributed,
    UserVerified,
    clicks,
    config_changes,
    contract_for,
    decode,
    dlq,
    dlq_topic,
    encode,
    events,
    send_jobs,
)
from libs.schemas.base import (
    MAX_PROP_DEPTH,
    MAX_PROP_KEYS,
    MAX_PROP_LIST_ITEMS,
    MAX_PROP_STRING_LENGTH,
    MAX_PROP_TOTAL_KEYS,
)

PERSIAN = "سلام دنیا! خرید ۱۲۳ تومانی — \u200cمی‌خواهم 🛒🇮🇷 (RTL: \u202bمتن\u202c)"


def event(**overrides: Any) -> dict[str, Any]:
    base = dict(events.EXAMPLES[0])
    base.update(overrides)
    return base


def send_job(**overrides: Any) -> dict[str, Any]:
    base = dict(send_jobs.EXAMPLES[0])
    base.update(overrides)
    return base


def rejected(model: type[Any], payload: dict[str, Any] | bytes) -> ContractError:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    with pytest.raises(ContractError) as info:
        decode(model, data)
    return info.value


EXAMPLE_CASES = [
    pytest.param(c.model, example, id=f"{topic}-{i}")
    for topic, c in CONTRACTS.items()
    for i, example in enumerate(c.examples)
]


@pytest.mark.parametrize(("model", "example"), EXAMPLE_CASES)
def test_every_example_round_trips(model: type[Any], example: dict[str, Any]) -> None:
    decoded = decode(model, encode(model.model_validate(example)))
    assert decoded == model.model_validate(example)
    assert decode(model, encode(decoded)) == decoded


def test_registry_covers_the_nine_topics() -> None:
    assert ALL_TOPICS == (
        "clicks",
        "events",
        "installs",
        "verifications",
        "attributions",
        "segment-changes",
        "send-jobs",
        "deliveries",
        "config-changes",
    )
    assert contract_for("send-jobs").model is SendJob
    for contract in CONTRACTS.values():
        assert len(contract.examples) >= 2


def test_unknown_topic_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match=r"no contract for topic 'nope'.*clicks"):
        contract_for("nope")


def test_encoded_datetimes_are_utc_iso() -> None:
    payload = event(ts="2024-05-01T13:45:00+03:30")
    encoded = encode(Event.model_validate(payload))
    assert b'"ts":"2024-05-01T10:15:00Z"' in encoded
    assert Event.model_validate(payload).ts.tzinfo is UTC


def test_persian_text_round_trips_unchanged() -> None:
    m = Event.model_validate(event(name=PERSIAN[:100], props={"متن": PERSIAN, "l": [PERSIAN]}))
    back = decode(Event, encode(m))
    assert back.name == PERSIAN[:100]
    assert back.props == {"متن": PERSIAN, "l": [PERSIAN]}
    assert PERSIAN.encode() in encode(m)  # raw UTF-8, not \u escapes


def test_extra_fields_are_ignored_for_forward_compatibility() -> None:
    m = decode(Event, orjson.dumps(event(added_in_v2={"x": 1})))
    assert not hasattr(m, "added_in_v2")


def test_models_are_frozen() -> None:
    m = Event.model_validate(event())
    with pytest.raises(Exception, match="frozen"):
        m.name = "other"  # type: ignore[misc]


# --- rejections name the field -------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({k: v for k, v in event().items() if k != "app_id"}, "app_id"),
        (event(app_id="bad app!"), "app_id"),
        (event(app_id="x" * 65), "app_id"),
        (event(ts="2024-05-01T10:00:00"), "ts"),
        (event(name="n" * 129), "name"),
        (event(event_id="a\nb"), "event_id"),
        (event(locale="x" * 257), "locale"),
        (event(currency="irr"), "currency"),
        (event(currency="IRRX"), "currency"),
        (event(platform="symbian"), "platform"),
        (event(device_id=None, user_id=None), "device_id"),
        (event(props={"color": "x" * (MAX_PROP_STRING_LENGTH + 1)}), "props.color"),
        (event(props={"a": {"b": {"c": {"d": 1}}}}), "props.a.b.c"),
        (event(props={"a": {"b": [[1]]}}), "props.a.b.0"),
        (event(props={f"k{i}": i for i in range(MAX_PROP_KEYS + 1)}), "props"),
        (event(props={"l": list(range(MAX_PROP_LIST_ITEMS + 1))}), "props.l"),
        (event(props={"": 1}), "props"),
        (event(props={"k" * 129: 1}), "props." + "k" * 129),
        (event(props={"n": 2**63}), "props.n"),
    ],
)
def test_event_rejections_name_the_field(payload: dict[str, Any], field: str) -> None:
    assert rejected(Event, payload).field == field


def test_error_str_is_readable() -> None:
    err = rejected(Event, event(props={"color": "x" * 2000}))
    assert str(err) == "props.color: String should have at most 1024 characters"
    assert err.reason == "String should have at most 1024 characters"


def test_naive_datetime_message_is_clear() -> None:
    err = rejected(Event, event(received_at="2024-05-01T10:00:00"))
    assert err.field == "received_at"
    assert "UTC offset" in err.reason


def test_props_total_key_limit_across_levels() -> None:
    per = MAX_PROP_TOTAL_KEYS // 10
    ok = {f"g{i}": {f"k{j}": j for j in range(per - 1)} for i in range(10)}
    Event.model_validate(event(props=ok))
    too_many = {f"g{i}": {f"k{j}": j for j in range(per)} for i in range(10)}
    assert rejected(Event, event(props=too_many)).reason.startswith("Props should have at most")


def test_props_depth_limit_allows_exactly_the_limit() -> None:
    assert MAX_PROP_DEPTH == 3
    Event.model_validate(event(props={"a": {"b": {"c": 1, "d": "x"}}, "l": [[1, "x"]]}))
    assert rejected(Event, event(props={"a": {"b": {"c": 1, "d": [1]}}})).field == "props.a.b.d"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_props_reject_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Event.model_validate(event(props={"a": {"score": bad}}))


def test_nan_literal_is_invalid_json() -> None:
    assert rejected(Event, b'{"props": {"x": NaN}}').field is None


def test_revenue_must_be_finite_but_may_be_negative() -> None:
    assert Event.model_validate(event(revenue=-10.5)).revenue == -10.5
    with pytest.raises(ValueError, match="finite"):
        Event.model_validate(event(revenue=float("inf")))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (send_job(template_id="tpl_1"), "content"),
        (send_job(content=None, template_id=None), "content"),
        (send_job(content={"body": ""}), "content.body"),
        (
            send_job(content={"body": "x", "data": {f"k{i}": "v" for i in range(21)}}),
            "content.data",
        ),
        (send_job(channel="fax"), "channel"),
        (send_job(fallback_channels=["sms"] * 6), "fallback_channels"),
        (send_job(fallback_channels=["pigeon"]), "fallback_channels.0"),
    ],
)
def test_send_job_rejections_name_the_field(payload: dict[str, Any], field: str) -> None:
    assert rejected(SendJob, payload).field == field


def test_send_job_context_is_bounded_like_props() -> None:
    # NaN cannot be written as JSON, so reach the rule through Python validation.
    with pytest.raises(ValueError, match=r"context\n\s+a: Number must be finite"):
        SendJob.model_validate(send_job(context={"a": float("nan")}))
    assert rejected(SendJob, send_job(context={"a": "x" * 1025})).field == "context.a"


def test_click_bounds() -> None:
    base = dict(clicks.EXAMPLES[0])
    assert rejected(ClickRecorded, {**base, "user_agent": "u" * 2049}).field == "user_agent"
    sub_id_field = rejected(ClickRecorded, {**base, "sub_ids": {"s" * 33: "v"}}).field
    assert sub_id_field is not None and sub_id_field.startswith("sub_ids")
    many = {f"s{i}": "v" for i in range(11)}
    assert rejected(ClickRecorded, {**base, "sub_ids": many}).field == "sub_ids"


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"str"', b"null", "{", b"{}"]
)
def test_decode_raises_only_contract_error(data: bytes | str) -> None:
    with pytest.raises(ContractError) as info:
        decode(Event, data)
    if data != b"{}":
        assert info.value.field is None
        assert info.value.reason.startswith("invalid JSON")


def test_contract_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ContractError("props.a", "too long")))
    assert (err.field, err.reason, str(err)) == ("props.a", "too long", "props.a: too long")


def test_schema_version_defaults_and_must_be_positive() -> None:
    payload = {k: v for k, v in event().items() if k != "schema_version"}
    assert Event.model_validate(payload).schema_version == 1
    assert rejected(Event, event(schema_version=0)).field == "schema_version"


# --- keys ----------------------------------------------------------------------------


def first(model: type[Any], module: Any, **overrides: Any) -> Any:
    return model.model_validate({**module.EXAMPLES[0], **overrides})


def test_keys_per_topic() -> None:
    from libs.schemas import (
        attributions,
        deliveries,
        installs,
        segment_changes,
        verifications,
    )

    assert clicks.key(first(ClickRecorded, clicks)) == "digikala:c_01HZX3K9V7Q2M8R4T6Y1B5N0PA"
    assert events.key(first(Event, events)) == "digikala:dev_8c1f2a7b"
    assert events.key(first(Event, events, device_id=None)) == "digikala:u_1001"
    assert installs.key(first(InstallReported, installs)) == "digikala:dev_8c1f2a7b"
    assert verifications.key(first(UserVerified, verifications)) == "digikala:u_1001"
    assert attributions.key(first(UserAttributed, attributions)) == "digikala:d:dev_8c1f2a7b"
    assert segment_changes.key(first(SegmentChanged, segment_changes)) == "digikala:u_1001"
    assert send_jobs.key(first(SendJob, send_jobs)) == "digikala:u_1001"
    assert deliveries.key(first(DeliveryReceipt, deliveries)) == "digikala:u_1001"
    assert config_changes.key(first(ConfigChanged, config_changes)) == "digikala"
    for topic, contract in CONTRACTS.items():
        m = contract.model.model_validate(contract.examples[0])
        assert contract.key(m).startswith(m.app_id), topic


def test_user_key_prefers_user_id() -> None:
    assert Event.model_validate(event()).user_key == "u_1001"
    assert Event.model_validate(event(user_id=None)).user_key == "d:dev_8c1f2a7b"


# --- DLQ -----------------------------------------------------------------------------


def test_dlq_record_keeps_garbage_bytes_and_truncates_error() -> None:
    failed_at = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=3, minutes=30)))
    value = b"\xff\x00{not json" + PERSIAN.encode()
    rec = DlqRecord.from_failure(
        "events", 2, 99, b"app:\xffdev", value, "e" * 10_000, "segmenter.events", failed_at
    )
    assert len(rec.error) == dlq.MAX_ERROR_LENGTH and rec.error.endswith("[truncated]")
    back = decode(DlqRecord, encode(rec))
    assert back == rec
    assert back.value_bytes() == value
    assert back.key_bytes() == b"app:\xffdev"
    assert dlq.key(back) == "app:\ufffddev"
    assert back.failed_at == failed_at and back.failed_at.tzinfo is UTC
    assert not hasattr(back, "app_id")


def test_dlq_without_key_or_value() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    rec = DlqRecord.from_failure("clicks", 0, 0, None, None, "tombstone", "g.c", now)
    assert dlq.key(rec) is None and rec.value_bytes() == b""


def test_dlq_rejects_non_base64() -> None:
    payload = {**dlq.EXAMPLES[0], "value_b64": "not base64!"}
    assert rejected(DlqRecord, payload).field == "value_b64"


def test_dlq_topic_name() -> None:
    assert dlq_topic("send-jobs") == "send-jobs.dlq"
