# ruff: noqa: E501 — the error-mapping tables read best one case a line
"""The providers' pure parts: payloads, error mapping, sealing, credential checks and
addresses. The adapters on the wire are tested in tests/integration/test_providers.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from libs.runtime.errors import InvalidInput
from libs.runtime.settings import DEV_SECRETS_KEY, DispatcherSettings
from services.dispatcher import credentials
from services.dispatcher.credentials import Keyring, SecretsKeyError, new_master_key
from services.dispatcher.providers import addresses
from services.dispatcher.providers.apns import apns_outcome, apns_request
from services.dispatcher.providers.base import REASONS, Message, retry_after
from services.dispatcher.providers.fcm import fcm_message, fcm_outcome
from services.dispatcher.providers.sms_http import gateway_outcome, kavenegar_status, local_id
from services.dispatcher.providers.smtp import build_email
from services.dispatcher.providers.webpush import topic_of, webpush_outcome

MSG = Message(app_id="app1", job_id="job-1", channel="push", title="سلام", body="متن پیام")


def fcm_body(status: str, message: str, code: str | None = None) -> bytes:
    error: dict[str, object] = {"code": 0, "status": status, "message": message}
    if code:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]
    return orjson.dumps({"error": error})


# --- FCM ---------------------------------------------------------------------------------


def test_fcm_message_notification_and_data() -> None:
    m = Message(
        app_id="a", job_id="j", channel="push", title="T", body="B", url="app://x",
        data={"k": "v"}, collapse_key="c", ttl_s=60, priority="normal",
    )  # fmt: skip
    out = fcm_message(m, "tok", android_channel_id="promos")
    assert out["token"] == "tok"
    assert out["notification"] == {"title": "T", "body": "B"}
    assert out["data"] == {"k": "v", "hodhod_job_id": "j", "url": "app://x"}
    assert out["android"]["priority"] == "NORMAL" and out["android"]["ttl"] == "60s"
    assert out["android"]["collapse_key"] == "c"
    assert out["android"]["notification"]["channel_id"] == "promos"
    assert out["apns"]["headers"]["apns-priority"] == "5"


def test_fcm_silent_message_is_data_only() -> None:
    out = fcm_message(
        Message(app_id="a", job_id="j", channel="push", title=None, body="", silent=True), "t"
    )
    assert "notification" not in out
    assert out["apns"]["payload"]["aps"] == {"content-available": 1}
    assert out["apns"]["headers"]["apns-push-type"] == "background"


@pytest.mark.parametrize(
    ("status", "body", "reason", "token_invalid", "transient"),
    [
        (404, fcm_body("NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"), "token_invalid", True, False),
        (400, fcm_body("INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"), "token_invalid", True, False),
        (400, fcm_body("INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT"), "payload_too_large", False, False),
        (400, fcm_body("INVALID_ARGUMENT", "Invalid value at 'message.data[0].value'"), "rejected", False, False),
        (403, fcm_body("PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"), "misconfigured", False, False),
        (401, fcm_body("UNAUTHENTICATED", "auth", "THIRD_PARTY_AUTH_ERROR"), "auth", False, False),
        (429, fcm_body("RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED"), "quota", False, True),
        (503, fcm_body("UNAVAILABLE", "down", "UNAVAILABLE"), "unavailable", False, True),
        (500, fcm_body("INTERNAL", "oops", "INTERNAL"), "unavailable", False, True),
        (502, b"<html>bad gateway</html>", "unavailable", False, True),
    ],
)  # fmt: skip
def test_fcm_error_mapping(
    status: int, body: bytes, reason: str, token_invalid: bool, transient: bool
) -> None:
    outcome = fcm_outcome(status, body, {"retry-after": "12"})
    assert outcome.status == "failed" and outcome.reason == reason
    assert outcome.token_invalid is token_invalid and outcome.transient is transient
    assert outcome.retry_after_s == (12.0 if transient else outcome.retry_after_s)


def test_fcm_success_carries_the_message_name() -> None:
    outcome = fcm_outcome(200, b'{"name": "projects/p/messages/0:1"}', {})
    assert (outcome.status, outcome.provider_message_id) == ("sent", "projects/p/messages/0:1")


# --- APNs --------------------------------------------------------------------------------


def test_apns_alert_headers_and_payload() -> None:
    m = Message(
        app_id="a", job_id="j", channel="push", title="T", body="B", url="app://x",
        collapse_key="k" * 80, ttl_s=600, category="orders",
    )  # fmt: skip
    now = datetime(2026, 1, 1, tzinfo=UTC)
    headers, payload = apns_request(m, topic="com.example", now=now)
    body = json.loads(payload)
    assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "10"
    assert headers["apns-topic"] == "com.example"
    assert headers["apns-expiration"] == str(int(now.timestamp()) + 600)
    assert len(headers["apns-collapse-id"].encode()) == 64
    assert (
        body["aps"]["alert"] == {"title": "T", "body": "B"} and body["aps"]["thread-id"] == "orders"
    )
    assert body["url"] == "app://x" and body["hodhod_job_id"] == "j"
    assert headers["apns-id"] == apns_request(m, topic="com.example")[0]["apns-id"]  # stable


def test_apns_silent_is_background_priority_5() -> None:
    m = Message(app_id="a", job_id="j", channel="push", title=None, body="", silent=True, ttl_s=0)
    headers, payload = apns_request(m, topic="t")
    assert headers["apns-push-type"] == "background" and headers["apns-priority"] == "5"
    assert headers["apns-expiration"] == "0"
    assert json.loads(payload)["aps"] == {"content-available": 1}


@pytest.mark.parametrize(
    ("status", "reason", "expected", "transient"),
    [
        (400, "BadDeviceToken", "token_invalid", False),
        (400, "DeviceTokenNotForTopic", "misconfigured", False),
        (400, "TopicDisallowed", "misconfigured", False),
        (400, "BadPriority", "rejected", False),
        (403, "InvalidProviderToken", "auth", False),
        (413, "PayloadTooLarge", "payload_too_large", False),
        (429, "TooManyRequests", "quota", True),
        (503, "ServiceUnavailable", "unavailable", True),
        (500, "InternalServerError", "unavailable", True),
    ],
)
def test_apns_error_mapping(status: int, reason: str, expected: str, transient: bool) -> None:
    outcome = apns_outcome(status, orjson.dumps({"reason": reason}), {})
    assert (outcome.reason, outcome.transient) == (expected, transient)


def test_apns_410_is_dead_since_its_timestamp() -> None:
    outcome = apns_outcome(410, b'{"reason": "Unregistered", "timestamp": 1700000000000}', {})
    assert outcome.token_invalid and outcome.reason == "token_invalid"
    assert outcome.invalid_since == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


# --- web push, SMS, email ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "transient"),
    [(404, "token_invalid", False), (410, "token_invalid", False), (413, "payload_too_large", False),
     (429, "quota", True), (403, "auth", False), (400, "rejected", False), (503, "unavailable", True)],
)  # fmt: skip
def test_webpush_error_mapping(status: int, reason: str, transient: bool) -> None:
    outcome = webpush_outcome(status, b"", {"retry-after": "3"})
    assert (outcome.reason, outcome.transient) == (reason, transient)
    assert outcome.token_invalid is (reason == "token_invalid")


@given(st.text(min_size=1, max_size=200))
def test_webpush_topic_is_always_a_valid_header(key: str) -> None:
    topic = topic_of(key)
    assert 1 <= len(topic) <= 32
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in topic)
    assert topic_of(key) == topic


@pytest.mark.parametrize(
    ("code", "reason", "transient"),
    [(411, "invalid_address", False), (412, "misconfigured", False), (418, "insufficient_credit", False),
     (403, "auth", False), (401, "auth", False), (409, "unavailable", True), (451, "quota", True),
     (413, "rejected", False), (422, "rejected", False), (502, "unavailable", True)],
)  # fmt: skip
def test_kavenegar_status_mapping(code: int, reason: str, transient: bool) -> None:
    outcome = kavenegar_status(code, "پیام")
    assert outcome is not None and (outcome.reason, outcome.transient) == (reason, transient)
    assert kavenegar_status(200, "تایید شد") is None


def test_kavenegar_local_id_is_numeric_and_stable() -> None:
    assert local_id("job-1") == local_id("job-1") != local_id("job-2")
    assert local_id("job-1").isdigit()


def test_gateway_reads_the_message_id_path() -> None:
    body = b'{"data": {"messages": [{"id": "m-7"}]}}'
    assert gateway_outcome(202, body, {}, "data.messages.0.id").provider_message_id == "m-7"
    assert gateway_outcome(200, body, {}, "data.nope").provider_message_id is None
    assert gateway_outcome(429, b"", {"retry-after": "5"}, None).retry_after_s == 5.0


def test_email_has_one_click_unsubscribe_and_both_parts() -> None:
    m = Message(
        app_id="app1", job_id="job/1", channel="email", title=None, body="متن", html="<p>متن</p>",
        subject="تخفیف", unsubscribe_url="https://u.example/x?t=1",
    )  # fmt: skip
    email = build_email(m, "sara@example.ir", from_address="news@shop.ir", from_name="فروشگاه")
    assert email["List-Unsubscribe"] == "<https://u.example/x?t=1>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["Subject"] == "تخفیف" and email["Message-ID"] == "<job-1.app1@shop.ir>"
    assert [p.get_content_type() for p in email.iter_parts()] == ["text/plain", "text/html"]


def test_email_without_https_unsubscribe_has_no_one_click_header() -> None:
    m = Message(
        app_id="a", job_id="j", channel="email", title="t", body="b", unsubscribe_url="mailto:u@x"
    )
    email = build_email(m, "a@b.c", from_address="n@s.ir")
    assert email["List-Unsubscribe"] == "<mailto:u@x>" and email["List-Unsubscribe-Post"] is None


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_every_reason_used_is_in_the_vocabulary() -> None:
    outcomes = [
        fcm_outcome(404, fcm_body("NOT_FOUND", "x", "UNREGISTERED"), {}),
        apns_outcome(410, b"{}", {}),
        webpush_outcome(413, b"", {}),
        kavenegar_status(418, ""),
    ]
    assert {o.reason for o in outcomes if o is not None} <= REASONS


# --- sealing -------------------------------------------------------------------------------


def keyring(**kw: object) -> Keyring:
    return Keyring.from_settings(
        DispatcherSettings(environment="test", dispatcher_secrets_key=new_master_key(), **kw)  # type: ignore[arg-type]
    )


@given(st.text(max_size=3000))
def test_sealed_secrets_open_only_for_their_app_and_provider(secret: str) -> None:
    ring = keyring()
    sealed = ring.sealer.seal(secret, app_id="app1", provider="fcm")
    if len(secret) >= 16:
        assert secret not in sealed
    assert ring.open(sealed, app_id="app1", provider="fcm") == secret
    for app_id, provider in (("app2", "fcm"), ("app1", "apns")):
        with pytest.raises(SecretsKeyError):
            ring.open(sealed, app_id=app_id, provider=provider)


def test_sealing_needs_only_the_public_key_and_each_seal_differs() -> None:
    ring = keyring()
    sealer = credentials.Sealer(ring.sealer._public)
    a = sealer.seal("s3cret-value", app_id="a", provider="smtp")
    b = sealer.seal("s3cret-value", app_id="a", provider="smtp")
    assert a != b and ring.open(a, app_id="a", provider="smtp") == "s3cret-value"


def test_another_master_key_cannot_open() -> None:
    sealed = keyring().sealer.seal("secret", app_id="a", provider="smtp")
    with pytest.raises(SecretsKeyError):
        keyring().open(sealed, app_id="a", provider="smtp")


def test_rotation_old_keys_still_open_and_rewrap_moves_to_the_new_key() -> None:
    old = new_master_key()
    before = Keyring.from_settings(
        DispatcherSettings(environment="test", dispatcher_secrets_key=old)
    )  # type: ignore[arg-type]
    sealed = before.sealer.seal("api-key-123", app_id="a", provider="kavenegar")
    after = Keyring.from_settings(
        DispatcherSettings(
            environment="test",
            dispatcher_secrets_key=new_master_key(),
            dispatcher_secrets_old_keys=old,
        )  # type: ignore[arg-type]
    )
    assert after.open(sealed, app_id="a", provider="kavenegar") == "api-key-123"
    moved = after.rewrap(sealed, app_id="a", provider="kavenegar")
    assert moved.split(".")[1] == after.key_id != sealed.split(".")[1]


def test_the_placeholder_is_refused_outside_development() -> None:
    for environment in ("test", "production"):
        with pytest.raises(SecretsKeyError, match="placeholder"):
            Keyring.from_settings(DispatcherSettings(environment=environment))  # type: ignore[arg-type]
    assert Keyring.from_settings(DispatcherSettings(environment="development")).key_id
    assert DispatcherSettings().dispatcher_secrets_key.get_secret_value() == DEV_SECRETS_KEY
    with pytest.raises(SecretsKeyError, match="32 random bytes"):
        Keyring.from_settings(
            DispatcherSettings(environment="production", dispatcher_secrets_key="short")
        )  # type: ignore[arg-type]


def test_the_master_key_is_a_secret_in_settings() -> None:
    key = new_master_key()
    settings = DispatcherSettings(environment="test", dispatcher_secrets_key=key)  # type: ignore[arg-type]
    assert key not in repr(settings) and key not in str(settings.model_dump())


# --- credential checks --------------------------------------------------------------------


def pem(key: object) -> str:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_fcm_service_account_is_checked_and_described() -> None:
    info = {
        "type": "service_account", "project_id": "shop-1", "private_key_id": "abcdef123456",
        "private_key": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "client_email": "sa@shop-1.iam.gserviceaccount.com",
    }  # fmt: skip
    checked = credentials.check("fcm", credentials.parse_config("fcm", {}), json.dumps(info))
    assert checked.metadata["project_id"] == "shop-1"
    assert checked.metadata["private_key_id_last4"] == "3456"
    assert info["private_key"] not in json.dumps(checked.metadata)
    with pytest.raises(InvalidInput) as bad:
        credentials.check(
            "fcm",
            {},
            json.dumps({**info, "private_key": pem(ec.generate_private_key(ec.SECP256R1()))}),
        )
    assert bad.value.field == "secret"


def test_apns_key_must_be_p256_and_config_well_formed() -> None:
    config = credentials.parse_config(
        "apns", {"key_id": "ABC123DEFG", "team_id": "TEAM123456", "topic": "com.shop"}
    )
    checked = credentials.check("apns", config, pem(ec.generate_private_key(ec.SECP256R1())))
    assert checked.metadata == {**config}
    with pytest.raises(InvalidInput) as bad:
        credentials.check("apns", config, pem(ec.generate_private_key(ec.SECP384R1())))
    assert bad.value.field == "secret"
    with pytest.raises(InvalidInput) as bad:
        credentials.parse_config("apns", {"key_id": "short", "team_id": "TEAM123456", "topic": "x"})
    assert bad.value.field == "config.key_id"


def test_api_keys_show_only_their_last_four() -> None:
    checked = credentials.check(
        "kavenegar",
        credentials.parse_config("kavenegar", {"sender": "10004346"}),
        "4A6F6E-SECRET-KEY-9Z8Y",
    )
    assert checked.metadata == {"sender": "10004346", "secret_last4": "9Z8Y"}


def test_unknown_config_fields_are_refused() -> None:
    with pytest.raises(InvalidInput) as bad:
        credentials.parse_config("smtp", {"host": "h", "from_address": "a@b.c", "password": "x"})
    assert bad.value.field == "config.password"


# --- addresses -----------------------------------------------------------------------------


def test_profile_tokens_become_addresses_newest_first() -> None:
    entries = [
        {"device_id": "d1", "token": "old", "provider": "fcm", "valid": True, "updated_at": "2026-01-01"},
        {"device_id": "d2", "token": "new", "provider": "apns", "valid": True, "updated_at": "2026-02-01"},
        {"device_id": "d3", "token": "dead", "provider": "fcm", "valid": False, "updated_at": "2026-03-01"},
        {"device_id": "d4", "token": "x", "provider": "other", "valid": True},
    ]  # fmt: skip
    found = addresses.push_addresses(entries)
    assert [(a.kind, a.value, a.device_id) for a in found] == [
        ("apns", "new", "d2"),
        ("fcm", "old", "d1"),
    ]


def test_web_push_subscription_json_becomes_an_address() -> None:
    sub = {"endpoint": "https://push.example/x", "keys": {"p256dh": "P", "auth": "A"}}
    address = addresses.webpush_address({"device_id": "w", "token": json.dumps(sub), "valid": True})
    assert address is not None and address.value == sub["endpoint"] and address.keys == sub["keys"]
    assert addresses.webpush_address({"token": "not json"}) is None
    assert addresses.webpush_address({"token": json.dumps({"endpoint": "https://x"})}) is None


def test_contacts_become_addresses() -> None:
    assert addresses.sms_address("0912 123 4567") == addresses.Address(
        kind="sms", value="+989121234567"
    )
    assert addresses.sms_address("nope") is None and addresses.sms_address(None) is None
    assert addresses.email_address("a@b.ir") is not None
    assert addresses.email_address("a@b.ir\r\nBcc: x@y") is None


def test_the_cli_prints_a_usable_master_key(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    assert main(["secrets-key"]) == 0
    key = capsys.readouterr().out.strip()
    ring = Keyring.from_settings(
        DispatcherSettings(environment="production", dispatcher_secrets_key=key)
    )  # type: ignore[arg-type]
    assert (
        ring.open(ring.sealer.seal("x", app_id="a", provider="smtp"), app_id="a", provider="smtp")
        == "x"
    )
    assert main(["secrets-key"]) == 0 and capsys.readouterr().out.strip() != key
