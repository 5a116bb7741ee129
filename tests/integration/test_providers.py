# ruff: noqa: E501 — request bodies read best on one line
"""Each provider adapter against a local server speaking its real wire protocol
(tests/fakes), with the errors those providers answer injected."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from py_vapid import Vapid02

from services.dispatcher.providers.apns import ApnsProvider
from services.dispatcher.providers.base import Address, Message
from services.dispatcher.providers.fcm import FcmProvider
from services.dispatcher.providers.http import HttpOptions, client
from services.dispatcher.providers.sms_http import HttpSmsProvider, KavenegarProvider
from services.dispatcher.providers.smtp import SmtpProvider
from services.dispatcher.providers.webpush import WebPushProvider, load_vapid, public_key
from tests.fakes import apns as fake_apns
from tests.fakes import fcm as fake_fcm
from tests.fakes import sms as fake_sms
from tests.fakes import smtp as fake_smtp
from tests.fakes import webpush as fake_webpush
from tests.fakes.common import Certificate, Failure, self_signed

pytestmark = pytest.mark.integration

PUSH = Message(
    app_id="app1",
    job_id="job-1",
    channel="push",
    title="سلام مریم",
    body="سبد خرید شما منتظر است 🛒",
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed(Path(tmp_path_factory.mktemp("tls")))


# --- FCM ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def fcm(certificate: Certificate) -> AsyncIterator[tuple[fake_fcm.FakeFcm, FcmProvider]]:
    fake = await fake_fcm.start(certificate=certificate)
    options = HttpOptions(ca_file=str(certificate.ca_file), timeout_s=2.0)
    shared = client(options, http2=True)
    provider = FcmProvider(
        service_account_info=fake.service_account("shop-1"),
        client=shared,
        base_url=fake.base_url,
        token_uri=fake.token_uri,
        options=options,
        android_channel_id="promos",
    )
    yield fake, provider
    await provider.aclose()
    await shared.aclose()
    assert fake.server is not None
    await fake.server.stop()


async def test_fcm_sends_over_http2_with_one_cached_token(fcm) -> None:
    fake, provider = fcm
    outcomes = await asyncio.gather(
        *(provider.send(PUSH, Address(kind="fcm", value=f"token-{i}")) for i in range(50))
    )
    assert {o.status for o in outcomes} == {"sent"}
    assert all(o.provider_message_id.startswith("projects/shop-1/messages/") for o in outcomes)
    assert fake.token_requests == 1  # the assertion was verified once, the token reused
    # Multiplexed on one HTTP/2 connection (the token came on its own, from google-auth).
    assert len({request.connection_id for _, _, request in fake.messages}) == 1
    project, message, request = fake.messages[-1]
    assert project == "shop-1" and request.http_version == "2"
    assert message["notification"] == {"title": "سلام مریم", "body": PUSH.body}
    assert message["data"]["hodhod_job_id"] == "job-1"
    assert message["android"]["notification"]["channel_id"] == "promos"


async def test_fcm_unregistered_and_malformed_tokens_are_dead(fcm) -> None:
    fake, provider = fcm
    fake.unregister("uninstalled")
    gone = await provider.send(PUSH, Address(kind="fcm", value="uninstalled"))
    bad = await provider.send(PUSH, Address(kind="fcm", value="bad-token"))
    assert (gone.reason, gone.token_invalid) == ("token_invalid", True)
    assert (bad.reason, bad.token_invalid) == ("token_invalid", True)


async def test_fcm_quota_and_unavailable_are_transient_with_retry_after(fcm) -> None:
    fake, provider = fcm
    fake.script.add(
        Failure(
            429,
            fake_fcm.fcm_error(429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED"),
            {"retry-after": "30"},
        )
    )
    fake.script.add(
        Failure(
            503, fake_fcm.fcm_error(503, "UNAVAILABLE", "down", "UNAVAILABLE"), {"retry-after": "5"}
        )
    )
    quota = await provider.send(PUSH, Address(kind="fcm", value="t1"))
    down = await provider.send(PUSH, Address(kind="fcm", value="t2"))
    assert (quota.reason, quota.transient, quota.retry_after_s) == ("quota", True, 30.0)
    assert (down.reason, down.transient, down.retry_after_s) == ("unavailable", True, 5.0)


async def test_fcm_refreshes_a_revoked_access_token_once(fcm) -> None:
    fake, provider = fcm
    await provider.send(PUSH, Address(kind="fcm", value="warm"))
    before = fake.token_requests
    fake.expire_access_tokens()
    outcome = await provider.send(PUSH, Address(kind="fcm", value="t"))
    assert outcome.status == "sent" and fake.token_requests == before + 1


async def test_fcm_refused_service_account_is_an_auth_failure(
    fcm, certificate: Certificate
) -> None:
    fake, _ = fcm
    stranger = fake_fcm.FakeFcm().service_account("shop-1")  # a key this Google never saw
    stranger["client_email"] = next(iter(fake.accounts))
    options = HttpOptions(ca_file=str(certificate.ca_file), timeout_s=2.0)
    async with client(options, http2=True) as shared:
        provider = FcmProvider(
            service_account_info=stranger, client=shared, base_url=fake.base_url,
            token_uri=fake.token_uri, options=options,
        )  # fmt: skip
        outcome = await provider.send(PUSH, Address(kind="fcm", value="t"))
        requests_after_first = fake.token_requests
        again = await provider.send(PUSH, Address(kind="fcm", value="t"))
    assert (outcome.reason, outcome.transient) == ("auth", False)
    assert "Invalid JWT Signature" in (outcome.error or "")
    assert again == outcome and fake.token_requests == requests_after_first  # not asked again


async def test_fcm_timeouts_and_dropped_connections_are_transient(fcm) -> None:
    fake, provider = fcm
    fake.script.add(Failure(delay_s=3.0, then_succeed=True))
    slow = await provider.send(PUSH, Address(kind="fcm", value="t"))
    fake.script.add(Failure(drop=True))
    dropped = await provider.send(PUSH, Address(kind="fcm", value="t"))
    after = await provider.send(PUSH, Address(kind="fcm", value="t"))
    assert (slow.reason, slow.transient) == ("timeout", True)
    assert (dropped.reason, dropped.transient) == ("network", True)
    assert after.status == "sent"  # a new connection replaces the dropped one


# --- APNs --------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def apns(certificate: Certificate) -> AsyncIterator[tuple[fake_apns.FakeApns, ApnsProvider]]:
    fake = await fake_apns.start(certificate)
    key = fake.new_key(team_id="TEAM123456", topic="ir.shop.app")
    provider = ApnsProvider(
        key_pem=key["key_pem"], key_id=key["key_id"], team_id=key["team_id"], topic=key["topic"],
        environment="sandbox", options=HttpOptions(ca_file=str(certificate.ca_file), timeout_s=2.0),
        base_url=fake.base_url,
    )  # fmt: skip
    yield fake, provider
    await provider.aclose()
    assert fake.server is not None
    await fake.server.stop()


DEVICE = "a1" * 32


async def test_apns_sends_over_http2_with_a_verified_es256_token(apns) -> None:
    fake, provider = apns
    m = Message(
        app_id="a",
        job_id="j-7",
        channel="push",
        title="T",
        body="B",
        collapse_key="cart",
        ttl_s=3600,
    )
    outcomes = await asyncio.gather(
        *(provider.send(m, Address(kind="apns", value=DEVICE)) for _ in range(20))
    )
    assert {o.status for o in outcomes} == {"sent"}
    assert fake.http_versions == {"2"} and fake.server.connections_seen == 1
    assert len(fake.provider_tokens) == 1 and provider.tokens.issued == 1
    token, headers, payload = fake.received[-1]
    assert token == DEVICE and headers["apns-topic"] == "ir.shop.app"
    assert headers["apns-push-type"] == "alert" and headers["apns-collapse-id"] == "cart"
    assert payload["aps"]["alert"] == {"title": "T", "body": "B"}
    assert outcomes[0].provider_message_id == headers["apns-id"]


async def test_apns_410_gives_the_time_the_token_died(apns) -> None:
    fake, provider = apns
    fake.unregister("b2" * 32, at_ms=1_717_000_000_000)
    outcome = await provider.send(PUSH, Address(kind="apns", value="b2" * 32))
    assert outcome.token_invalid and outcome.reason == "token_invalid"
    assert (
        outcome.invalid_since is not None
        and int(outcome.invalid_since.timestamp()) == 1_717_000_000
    )
    bad = await provider.send(PUSH, Address(kind="apns", value="not-hex"))
    assert (bad.reason, bad.token_invalid) == ("token_invalid", True)


async def test_apns_silent_push_is_background(apns) -> None:
    fake, provider = apns
    silent = Message(
        app_id="a", job_id="s", channel="push", title=None, body="", silent=True, data={"sync": "1"}
    )
    assert (await provider.send(silent, Address(kind="apns", value=DEVICE))).status == "sent"
    _, headers, payload = fake.received[-1]
    assert headers["apns-push-type"] == "background" and headers["apns-priority"] == "5"
    assert payload == {"aps": {"content-available": 1}, "sync": "1", "hodhod_job_id": "s"}


async def test_apns_refuses_a_token_from_an_unknown_key(apns, certificate: Certificate) -> None:
    fake, _ = apns
    other = fake_apns.FakeApns().new_key()  # never registered with this APNs
    provider = ApnsProvider(
        key_pem=other["key_pem"], key_id=other["key_id"], team_id=other["team_id"], topic="ir.shop.app",
        options=HttpOptions(ca_file=str(certificate.ca_file)), base_url=fake.base_url,
    )  # fmt: skip
    try:
        outcome = await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    finally:
        await provider.aclose()
    assert (outcome.reason, outcome.error) == ("auth", "APNs 403 InvalidProviderToken")


async def test_apns_errors_throttling_and_payload_size(apns) -> None:
    fake, provider = apns
    fake.script.add(Failure(429, b'{"reason": "TooManyRequests"}'))
    fake.script.add(Failure(503, b'{"reason": "ServiceUnavailable"}', {"retry-after": "2"}))
    throttled = await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    down = await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    huge = Message(app_id="a", job_id="h", channel="push", title="t", body="x" * 5000)
    too_big = await provider.send(huge, Address(kind="apns", value=DEVICE))
    assert (throttled.reason, throttled.transient) == ("quota", True)
    assert (down.reason, down.transient, down.retry_after_s) == ("unavailable", True, 2.0)
    assert too_big.reason == "payload_too_large"


async def test_apns_expired_provider_token_is_replaced_and_retried(apns) -> None:
    fake, provider = apns
    clock = [time.time()]
    provider.tokens._clock = lambda: clock[0]
    provider.tokens._token = None
    await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    issued = provider.tokens.issued
    clock[0] += 25 * 60  # old enough that Apple allows a refresh
    fake.script.add(Failure(403, b'{"reason": "ExpiredProviderToken"}'))
    outcome = await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    assert outcome.status == "sent" and provider.tokens.issued == issued + 1
    clock[0] += 60 * 60  # past 50 minutes: replaced before use, without being refused
    await provider.send(PUSH, Address(kind="apns", value=DEVICE))
    assert provider.tokens.issued == issued + 2


# --- web push -----------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def webpush() -> AsyncIterator[tuple[fake_webpush.FakePushService, WebPushProvider, str]]:
    fake = await fake_webpush.start()
    vapid = Vapid02()
    vapid.generate_keys()
    raw = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    private = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    shared = client(HttpOptions(timeout_s=2.0), http2=True)
    provider = WebPushProvider(
        private_key=private, subject="mailto:push@shop.ir", client=shared, allow_http=True
    )
    yield fake, provider, public_key(load_vapid(private))
    await shared.aclose()
    assert fake.server is not None
    await fake.server.stop()


async def test_webpush_payload_is_decrypted_by_the_subscription_key(webpush) -> None:
    fake, provider, server_key = webpush
    sub = fake.subscribe(application_server_key=server_key)
    m = Message(
        app_id="a", job_id="w-1", channel="web_push", title="حراج", body="۵۰٪ تخفیف",
        url="https://shop.ir/sale", collapse_key="sale:autumn", ttl_s=600, priority="normal",
    )  # fmt: skip
    outcome = await provider.send(
        m, Address(kind="webpush", value=sub["endpoint"], keys=sub["keys"])
    )
    assert outcome.status == "sent" and outcome.provider_message_id.startswith(fake.base_url)
    push = fake.received[-1]
    assert push.payload == {
        "job_id": "w-1",
        "title": "حراج",
        "body": "۵۰٪ تخفیف",
        "url": "https://shop.ir/sale",
        "tag": "sale:autumn",
    }
    assert push.headers["ttl"] == "600" and push.headers["urgency"] == "normal"
    assert len(push.headers["topic"]) <= 32 and push.claims["sub"] == "mailto:push@shop.ir"


async def test_webpush_expired_subscription_and_wrong_key(webpush) -> None:
    fake, provider, _ = webpush
    gone = fake.subscribe()
    fake.unsubscribe(gone["endpoint"])
    expired = await provider.send(
        PUSH, Address(kind="webpush", value=gone["endpoint"], keys=gone["keys"])
    )
    other = fake.subscribe(application_server_key="another-apps-key")
    mismatch = await provider.send(
        PUSH, Address(kind="webpush", value=other["endpoint"], keys=other["keys"])
    )
    assert (expired.reason, expired.token_invalid) == ("token_invalid", True)
    assert (mismatch.reason, mismatch.token_invalid) == ("auth", False)


async def test_webpush_throttled_and_failing_service(webpush) -> None:
    fake, provider, _ = webpush
    sub = fake.subscribe()
    address = Address(kind="webpush", value=sub["endpoint"], keys=sub["keys"])
    fake.script.add(Failure(429, b"slow down", {"retry-after": "60"}))
    fake.script.add(Failure(500, b"oops"))
    throttled, failing = await provider.send(PUSH, address), await provider.send(PUSH, address)
    assert (throttled.reason, throttled.retry_after_s) == ("quota", 60.0)
    assert (failing.reason, failing.transient) == ("unavailable", True)


# --- SMS ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def kavenegar() -> AsyncIterator[tuple[fake_sms.FakeKavenegar, KavenegarProvider]]:
    fake = await fake_sms.start_kavenegar()
    shared = client(HttpOptions(timeout_s=2.0), http2=False)
    yield (
        fake,
        KavenegarProvider(
            api_key=fake.api_key, client=shared, sender="10004346", base_url=fake.base_url
        ),
    )
    await shared.aclose()
    assert fake.server is not None
    await fake.server.stop()


def sms(job_id: str, body: str = "کد ورود شما ۴۸۲۱۳") -> Message:
    return Message(app_id="a", job_id=job_id, channel="sms", title=None, body=body)


async def test_kavenegar_sends_once_per_job(kavenegar) -> None:
    fake, provider = kavenegar
    first = await provider.send(sms("otp-1"), Address(kind="sms", value="+989121234567"))
    again = await provider.send(sms("otp-1"), Address(kind="sms", value="+989121234567"))
    assert first.status == "sent" and again.provider_message_id == first.provider_message_id
    assert [
        (s.receptor, s.sender) for s in fake.sent if s.localid == fake.calls[-1][1]["localid"]
    ] == [
        ("09121234567", "10004346")
    ]  # the resend carried the same local id and Kavenegar sent nothing new


async def test_kavenegar_bulk_uses_sendarray_and_isolates_a_bad_number(kavenegar) -> None:
    fake, provider = kavenegar
    items = [
        (sms(f"bulk-{i}", f"پیام {i}"), Address(kind="sms", value=f"+98912000000{i}"))
        for i in range(5)
    ]
    calls_before = len(fake.calls)
    outcomes = await provider.send_many(items)
    assert [o.status for o in outcomes] == ["sent"] * 5
    assert len({o.provider_message_id for o in outcomes}) == 5
    assert [c[0] for c in fake.calls[calls_before:]] == ["sendarray.json"]  # one call for all
    assert [s.message for s in fake.sent[-5:]] == [f"پیام {i}" for i in range(5)]

    # A number the operator refuses fails the whole sendarray call (411): the others
    # are then sent one by one, and only that one fails.
    refused = "09120000103"
    fake.script.add(
        Failure(
            411, fake_sms.kavenegar_body(411), match=lambda r: r.path.endswith("sendarray.json")
        )
    )
    fake.script.add(
        Failure(411, fake_sms.kavenegar_body(411), match=lambda r: refused.encode() in r.body)
    )
    items = [
        (sms(f"bulk2-{i}"), Address(kind="sms", value=f"+9891200001{i:02d}")) for i in range(5)
    ]
    outcomes = await provider.send_many(items)
    assert [o.reason for o in outcomes] == [None, None, None, "invalid_address", None]
    assert [o.status for o in outcomes] == ["sent", "sent", "sent", "failed", "sent"]
    invalid = await provider.send_many([(sms("bulk-bad"), Address(kind="sms", value="12"))])
    assert invalid[0].reason == "invalid_address"  # not a phone number: never sent


async def test_kavenegar_codes_map_to_outcomes(kavenegar) -> None:
    fake, provider = kavenegar
    fake.credit_segments = 0
    broke = await provider.send(sms("c-1"), Address(kind="sms", value="09121112222"))
    fake.credit_segments = 1_000_000
    invalid = await provider.send(sms("c-2"), Address(kind="sms", value="0912"))
    fake.script.add(Failure(502, fake_sms.kavenegar_body(502)))
    down = await provider.send(sms("c-3"), Address(kind="sms", value="09121112222"))
    assert broke.reason == "insufficient_credit" and invalid.reason == "invalid_address"
    assert (down.reason, down.transient) == ("unavailable", True)
    bad_key = KavenegarProvider(
        api_key="WRONG-KEY-000000",
        client=client(HttpOptions(), http2=False),
        base_url=fake.base_url,
    )
    assert (
        await bad_key.send(sms("c-4"), Address(kind="sms", value="09121112222"))
    ).reason == "auth"


async def test_generic_gateway_fills_its_template() -> None:
    fake = await fake_sms.start_gateway()
    try:
        async with client(HttpOptions(), http2=False) as shared:
            provider = HttpSmsProvider(
                url=f"{fake.base_url}/v2/messages", secret=fake.token, client=shared, sender="3000",
                body={"recipient": "{to}", "content": "{text}", "from": "{sender}", "ref": "{job_id}", "parts": "{segments}"},
                message_id_path="data.messages.0.id",
            )  # fmt: skip
            outcome = await provider.send(
                sms("g-1", "سلام"), Address(kind="sms", value="09121234567")
            )
            fake.script.add(Failure(429, b"{}", {"retry-after": "9"}))
            throttled = await provider.send(sms("g-2"), Address(kind="sms", value="09121234567"))
    finally:
        assert fake.server is not None
        await fake.server.stop()
    assert (outcome.status, outcome.provider_message_id) == ("sent", "gw-1")
    import orjson

    assert orjson.loads(fake.received[0].body) == {
        "recipient": "+989121234567",
        "content": "سلام",
        "from": "3000",
        "ref": "g-1",
        "parts": "1",
    }
    assert (throttled.reason, throttled.retry_after_s) == ("quota", 9.0)


# --- email -----------------------------------------------------------------------------------


EMAIL = Message(
    app_id="a", job_id="e-1", channel="email", title=None, body="سلام سارا", html="<p>سلام <b>سارا</b></p>",
    subject="پیشنهاد ویژه", unsubscribe_url="https://shop.ir/u/abc",
)  # fmt: skip


async def test_smtp_starttls_auth_and_one_click_unsubscribe(certificate: Certificate) -> None:
    fake = await fake_smtp.start(tls_context=certificate.server_context())
    provider = SmtpProvider(
        host="127.0.0.1", port=fake.port, from_address="news@shop.ir", from_name="فروشگاه",
        username=fake.username, password=fake.password, tls="starttls", tls_context=certificate.client_context(),
    )  # fmt: skip
    try:
        outcome = await provider.send(EMAIL, Address(kind="email", value="sara@example.ir"))
        fake.unknown_recipients.add("nobody@example.ir")
        refused = await provider.send(EMAIL, Address(kind="email", value="nobody@example.ir"))
        fake.refusals.append(("data", "451 4.7.1 Greylisted, try again later"))
        later = await provider.send(EMAIL, Address(kind="email", value="sara@example.ir"))
        many = await provider.send_many(
            [(EMAIL, Address(kind="email", value=f"u{i}@example.ir")) for i in range(6)]
        )
        fake_smtp.hang_up(fake)  # the relay closes idle sessions: the pool reconnects
        after_hangup = await provider.send(EMAIL, Address(kind="email", value="late@example.ir"))
    finally:
        await provider.aclose()
        await fake_smtp.stop(fake)
    assert outcome.status == "sent" and outcome.provider_message_id == "<e-1.a@shop.ir>"
    received = fake.received[0]
    assert received.tls and received.login == "mailer" and received.rcpt_tos == ["sara@example.ir"]
    assert received.message["Subject"] == "پیشنهاد ویژه"
    assert received.message["List-Unsubscribe"] == "<https://shop.ir/u/abc>"
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = received.message.get_body(("html",))
    assert html is not None and "<b>سارا</b>" in html.get_content()
    assert refused.reason == "invalid_address"
    assert (later.reason, later.transient) == ("unavailable", True)
    assert [o.status for o in many] == ["sent"] * 6
    # Pooled, not one session per message: the first send's session carried it; the
    # refusal and the 4xx each ended theirs; the six sends went over two (one reused);
    # the hang-up cost one more.
    assert fake.sessions == 5
    assert after_hangup.status == "sent" and fake.received[-1].rcpt_tos == ["late@example.ir"]


async def test_smtp_implicit_tls_bad_password_and_refused_connection(
    certificate: Certificate,
) -> None:
    fake = await fake_smtp.start(tls_context=certificate.server_context(), implicit_tls=True)
    wrong = SmtpProvider(
        host="127.0.0.1", port=fake.port, from_address="n@shop.ir", username="mailer",
        password="not-the-password", tls="tls", tls_context=certificate.client_context(),
    )  # fmt: skip
    try:
        denied = await wrong.send(EMAIL, Address(kind="email", value="a@b.ir"))
    finally:
        await wrong.aclose()
        await fake_smtp.stop(fake)
    nobody = SmtpProvider(
        host="127.0.0.1", port=fake.port, from_address="n@shop.ir", tls="none", timeout_s=1.0
    )
    unreachable = await nobody.send(EMAIL, Address(kind="email", value="a@b.ir"))
    assert (denied.reason, denied.transient) == ("auth", False)
    assert (unreachable.reason, unreachable.transient) == ("network", True)
