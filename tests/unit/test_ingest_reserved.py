"""Reserved ``$`` events and placeholder user ids: each rule, through ``parse_batch``
(rejected by index with the field, neighbours accepted) and ``check_event`` directly."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.runtime.errors import InvalidInput
from libs.schemas import Event
from services.ingest.logic import BatchResult, parse_batch
from services.ingest.reserved import (
    CONSENT_CHANNELS,
    PLACEHOLDER_USER_IDS,
    PUSH_PROVIDERS,
    RESERVED,
    check_event,
    is_placeholder_user_id,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TS = (NOW - timedelta(minutes=1)).isoformat()


def ev(name: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": "e", "name": name, "device_id": "dev_1", "ts": TS}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def parse(*events: Any) -> BatchResult:
    return parse_batch(
        {"events": list(events)}, app_id="a", received_at=NOW, ip=None, user_agent=None
    )


def outcome(raw: dict[str, Any]) -> str | None:
    """None when accepted, else the rejected field ('' for a whole-event rejection).

    Every call surrounds the event with valid neighbours, which must survive."""
    result = parse(ev("ok_before", event_id="n0"), raw, ev("ok_after", event_id="n2"))
    assert [e.event_id for e in result.events if e.event_id in ("n0", "n2")] == ["n0", "n2"]
    assert all(r.index == 1 and r.reason for r in result.rejected)
    if not result.rejected:
        return None
    return result.rejected[0].field or ""


VALID: list[dict[str, Any]] = [
    ev("$install"),
    ev("$install", props={"referrer": "click_id=c1"}),
    ev("$uninstall"),
    ev("$open"),
    ev("$close", session_id="s1"),
    ev("$identify", user_id="u_1"),
    ev("$attributes", props={"set": {"name": "مریم", "age": 30}}),
    ev("$attributes", props={"set_once": {"first_source": "ads"}}),
    ev("$attributes", props={"increment": {"logins": 1, "score": -2.5}}),
    ev("$attributes", props={"unset": ["age", "city"]}),
    ev(
        "$attributes",
        props={
            "set": {"phone": "+989121234567", "email": "a@example.com"},
            "set_once": {"email": "first@example.com"},
            "increment": {},
            "unset": [],
        },
    ),
    ev("$push_token", props={"token": "t" * 1024, "provider": "fcm"}),
    ev("$push_token", props={"token": "a", "provider": "apns"}),
    ev("$push_token", props={"token": "endpoint", "provider": "webpush", "extra": 1}),
    ev("$push_permission", props={"granted": True}),
    ev("$push_permission", props={"granted": False}),
    ev("$location", props={"lat": 35.7, "lon": 51.4}),
    ev("$location", props={"lat": -90, "lon": 180, "accuracy": 0}),
    ev("$location", props={"lat": 90.0, "lon": -180.0, "accuracy": 12.5}),
    ev("$purchase", revenue=0, currency="IRR"),
    ev("$purchase", revenue=12.5, currency="USD", props={"sku": "x"}),
    ev("$purchase", revenue=-12.5, currency="USD", props={"refund": True}),
    ev("$message_opened", props={"job_id": "j_1"}),
    ev("$message_clicked", props={"job_id": "j_1", "button": "buy"}),
    *(ev("$opt_out", props={"channel": c}) for c in CONSENT_CHANNELS),
    *(ev("$opt_in", props={"channel": c}) for c in CONSENT_CHANNELS),
    # backend-style events keyed by the user only
    ev("$purchase", device_id=..., user_id="u_1", revenue=1, currency="IRR"),
    ev("$attributes", device_id=..., user_id="u_1", props={"set": {"a": 1}}),
    # custom events stay free-form
    ev("purchase", props={"refund": "maybe"}, revenue=-3),
    ev("signup", props={"token": 5}),
]


@pytest.mark.parametrize("raw", VALID, ids=lambda r: r["name"])
def test_valid_reserved_events_are_accepted(raw: dict[str, Any]) -> None:
    assert outcome(raw) is None


INVALID: list[tuple[dict[str, Any], str]] = [
    # device-bound lifecycle events
    *((ev(n, device_id=..., user_id="u_1"), "device_id") for n in ("$open", "$close")),
    *((ev(n, device_id=..., user_id="u_1"), "device_id") for n in ("$install", "$uninstall")),
    # $identify links a device to a user: both are needed
    (ev("$identify"), "user_id"),
    (ev("$identify", device_id=..., user_id="u_1"), "device_id"),
    # $attributes
    (ev("$attributes"), "props"),
    (ev("$attributes", props={}), "props"),
    (ev("$attributes", props={"name": "x"}), "props.name"),
    (ev("$attributes", props={"set": {"a": 1}, "add": {"b": 1}}), "props.add"),
    (ev("$attributes", props={"set": ["a"]}), "props.set"),
    (ev("$attributes", props={"set": "a"}), "props.set"),
    (ev("$attributes", props={"set_once": 1}), "props.set_once"),
    (ev("$attributes", props={"set": {"phone": 9121234567}}), "props.set.phone"),
    (ev("$attributes", props={"set": {"phone": None}}), "props.set.phone"),
    (ev("$attributes", props={"set": {"email": ["a@b.c"]}}), "props.set.email"),
    (ev("$attributes", props={"set_once": {"email": True}}), "props.set_once.email"),
    (ev("$attributes", props={"increment": [1]}), "props.increment"),
    (ev("$attributes", props={"increment": {"n": "1"}}), "props.increment.n"),
    (ev("$attributes", props={"increment": {"n": True}}), "props.increment.n"),
    (ev("$attributes", props={"increment": {"n": None}}), "props.increment.n"),
    (ev("$attributes", props={"increment": {"n": {"by": 1}}}), "props.increment.n"),
    (ev("$attributes", props={"unset": "age"}), "props.unset"),
    (ev("$attributes", props={"unset": {"age": True}}), "props.unset"),
    (ev("$attributes", props={"unset": ["age", 3]}), "props.unset.1"),
    (ev("$attributes", props={"unset": [""]}), "props.unset.0"),
    # $push_token
    (ev("$push_token"), "props.token"),
    (ev("$push_token", props={"provider": "fcm"}), "props.token"),
    (ev("$push_token", props={"token": "", "provider": "fcm"}), "props.token"),
    (ev("$push_token", props={"token": 123, "provider": "fcm"}), "props.token"),
    (ev("$push_token", props={"token": "t"}), "props.provider"),
    (ev("$push_token", props={"token": "t", "provider": "FCM"}), "props.provider"),
    (ev("$push_token", props={"token": "t", "provider": "huawei"}), "props.provider"),
    # $push_permission
    (ev("$push_permission"), "props.granted"),
    (ev("$push_permission", props={"granted": "yes"}), "props.granted"),
    (ev("$push_permission", props={"granted": 1}), "props.granted"),
    # $location
    (ev("$location"), "props.lat"),
    (ev("$location", props={"lat": 35.7}), "props.lon"),
    (ev("$location", props={"lat": 90.01, "lon": 0}), "props.lat"),
    (ev("$location", props={"lat": -91, "lon": 0}), "props.lat"),
    (ev("$location", props={"lat": "35.7", "lon": 51}), "props.lat"),
    (ev("$location", props={"lat": True, "lon": 51}), "props.lat"),
    (ev("$location", props={"lat": 0, "lon": 180.5}), "props.lon"),
    (ev("$location", props={"lat": 0, "lon": -181}), "props.lon"),
    (ev("$location", props={"lat": 0, "lon": 0, "accuracy": -1}), "props.accuracy"),
    (ev("$location", props={"lat": 0, "lon": 0, "accuracy": None}), "props.accuracy"),
    (ev("$location", props={"lat": 0, "lon": 0, "accuracy": "10m"}), "props.accuracy"),
    # $purchase
    (ev("$purchase"), "revenue"),
    (ev("$purchase", currency="IRR"), "revenue"),
    (ev("$purchase", revenue=10), "currency"),
    (ev("$purchase", revenue=-10, currency="IRR"), "revenue"),
    (ev("$purchase", revenue=-10, currency="IRR", props={"refund": "true"}), "revenue"),
    (ev("$purchase", revenue=-10, currency="IRR", props={"refund": 1}), "revenue"),
    (ev("$purchase", revenue=-0.01, currency="IRR", props={"refund": False}), "revenue"),
    # message outcomes
    (ev("$message_opened"), "props.job_id"),
    (ev("$message_clicked", props={"job_id": ""}), "props.job_id"),
    (ev("$message_clicked", props={"job_id": 42}), "props.job_id"),
    (ev("$message_opened", props={"job_id": "j" * 129}), "props.job_id"),
    # consent
    (ev("$opt_out"), "props.channel"),
    (ev("$opt_in", props={"channel": "PUSH"}), "props.channel"),
    (ev("$opt_out", props={"channel": "inbox"}), "props.channel"),
    (ev("$opt_out", props={"channel": ["sms"]}), "props.channel"),
    # unknown reserved names
    (ev("$login"), "name"),
    (ev("$"), "name"),
    (ev("$Purchase", revenue=1, currency="IRR"), "name"),
    (ev("$install "), "name"),
]


@pytest.mark.parametrize(("raw", "field"), INVALID, ids=lambda v: str(v)[:60])
def test_invalid_reserved_events_are_rejected_naming_the_field(
    raw: dict[str, Any], field: str
) -> None:
    assert outcome(raw) == field


def test_every_reserved_name_has_a_rule_under_test() -> None:
    names = {r["name"] for r in VALID} | {r["name"] for r, _ in INVALID}
    assert set(RESERVED) <= names


def test_unknown_reserved_name_reason_mentions_the_prefix() -> None:
    (rejection,) = parse(ev("$login")).rejected
    assert "reserved prefix" in rejection.reason


def test_refund_reason_explains_the_refund_flag() -> None:
    (rejection,) = parse(ev("$purchase", revenue=-1, currency="IRR")).rejected
    assert "refund" in rejection.reason


def test_a_rejected_install_produces_no_install_record() -> None:
    result = parse(ev("$install", device_id=..., user_id="u_1"), ev("$install", event_id="i2"))
    assert [i.event_id for i in result.installs] == ["i2"]


def test_push_token_longer_than_the_props_string_limit_is_rejected() -> None:
    # The Event contract caps any props string at 1024 characters, below the 4096 the
    # reserved rule allows; the contract is checked first and names the same field.
    assert outcome(ev("$push_token", props={"token": "t" * 1025, "provider": "fcm"})) == (
        "props.token"
    )


# --- placeholder user ids ---------------------------------------------------------------

PLACEHOLDERS = [
    "null",
    "NULL",
    "Null",
    "undefined",
    "Undefined",
    "none",
    "None",
    "nil",
    "NIL",
    "0",
    "-1",
    "anonymous",
    "Anonymous",
    "guest",
    "GUEST",
    "unknown",
    "Unknown",
    "[object Object]",
    "[OBJECT OBJECT]",
    " ",
    "\t",
    "  null  ",
    " guest\t",
]


@pytest.mark.parametrize("user_id", PLACEHOLDERS)
@pytest.mark.parametrize("name", ["$identify", "$open", "purchase", "$attributes"])
def test_placeholder_user_ids_are_rejected_on_every_event(user_id: str, name: str) -> None:
    props = {"set": {"a": 1}} if name == "$attributes" else {}
    assert outcome(ev(name, user_id=user_id, props=props)) == "user_id"


def test_empty_user_id_is_rejected() -> None:
    assert outcome(ev("$identify", user_id="")) == "user_id"


@pytest.mark.parametrize(
    "user_id", ["u_0", "00", "10", "-2", "null1", "guest_42", "nullable", "[object]", "۰"]
)
def test_real_ids_that_resemble_placeholders_are_accepted(user_id: str) -> None:
    assert outcome(ev("$identify", user_id=user_id)) is None


@settings(max_examples=200, deadline=None)
@given(
    word=st.sampled_from(sorted(PLACEHOLDER_USER_IDS)),
    flips=st.lists(st.booleans(), min_size=20, max_size=20),
    pad=st.sampled_from(["", " ", "\t", "  "]),
)
def test_placeholders_in_any_case_and_padding(word: str, flips: list[bool], pad: str) -> None:
    cased = "".join(c.upper() if f else c for c, f in zip(word, flips, strict=False))
    assert is_placeholder_user_id(pad + cased + pad)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=20))
def test_placeholder_is_exactly_the_normalised_set(value: str) -> None:
    assert is_placeholder_user_id(value) == (value.strip().lower() in PLACEHOLDER_USER_IDS)


# --- properties: any props, any reserved name -------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=6), children)
    ),
    max_leaves=10,
)
KEYS = st.sampled_from(
    [
        "set",
        "set_once",
        "increment",
        "unset",
        "token",
        "provider",
        "granted",
        "lat",
        "lon",
        "accuracy",
        "refund",
        "job_id",
        "channel",
        "phone",
        "email",
        "x",
    ]
)
VALUES = (
    JSON
    | st.sampled_from([*PUSH_PROVIDERS, *CONSENT_CHANNELS, True, False, 0, -1, 91, "j1"])
    | st.dictionaries(KEYS, JSON, max_size=3)
    | st.lists(st.text(max_size=5), max_size=3)
)
RESERVED_NAMES = st.sampled_from([*RESERVED, "$other", "custom"])


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=RESERVED_NAMES,
    props=st.dictionaries(KEYS, VALUES, max_size=4),
    device=st.sampled_from(["dev_1", None]),
    user=st.sampled_from(["u_1", "Guest", None]),
    revenue=st.none() | st.floats(-100, 100, allow_nan=False),
    currency=st.sampled_from([None, "IRR"]),
)
def test_reserved_checks_raise_only_invalid_input_with_a_field(
    name: str,
    props: dict[str, Any],
    device: str | None,
    user: str | None,
    revenue: float | None,
    currency: str | None,
) -> None:
    try:
        event = Event(
            app_id="a",
            event_id="e",
            name=name,
            device_id=device,
            user_id=user,
            ts=NOW,
            received_at=NOW,
            props=props,
            revenue=revenue,
            currency=currency,
        )
    except ValueError:
        return  # not a valid Event in the first place: the contract reports it
    try:
        check_event(event)
    except InvalidInput as exc:
        assert exc.field  # always names what to fix
        assert exc.message
        assert exc.field in ("name", "device_id", "user_id", "revenue", "currency", "props") or (
            exc.field.startswith("props.")
        )
        return
    # Accepted: then the defining facts of its shape hold.
    assert user != "Guest"
    assert not name.startswith("$") or name in RESERVED
    if name in ("$open", "$close", "$install", "$uninstall", "$identify"):
        assert device is not None
    if name == "$purchase":
        assert revenue is not None and currency is not None
        assert revenue >= 0 or props.get("refund") is True
    if name == "$push_permission":
        assert isinstance(props["granted"], bool)
    if name in ("$opt_in", "$opt_out"):
        assert props["channel"] in CONSENT_CHANNELS
    if name == "$attributes":
        assert props and set(props) <= {"set", "set_once", "increment", "unset"}


# --- purity -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({n.split(".")[0] for n in sys.modules} & set(json.loads(sys.argv[2])))))
"""


@pytest.mark.parametrize("module", ["services.ingest.reserved", "libs.runtime.ratelimit"])
def test_rule_modules_import_no_io_framework(module: str) -> None:
    forbidden = ["fastapi", "sqlalchemy", "aiokafka", "clickhouse_connect", "prometheus_client"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(forbidden)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
