# ruff: noqa: E501 — request bodies read best on one line
"""Per-app provider credentials: the write-only admin endpoints, sealing at rest, the
registry routing sends to the app's providers, and no secret in any log."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from libs.runtime.tenancy import provision_app
from services.dispatcher.credentials import Keyring
from services.dispatcher.providers import Address, Message, ProviderRegistry
from services.dispatcher.providers.fcm import FcmProvider
from services.dispatcher.providers.sms_http import KavenegarProvider
from tests.fakes import fcm as fake_fcm
from tests.fakes import sms as fake_sms

pytestmark = pytest.mark.integration

URL = "/admin/v1/app/providers"


def admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}


@pytest_asyncio.fixture(loop_scope="session")
async def fakes() -> AsyncIterator[tuple[fake_fcm.FakeFcm, fake_sms.FakeKavenegar]]:
    fcm = await fake_fcm.start()
    kavenegar = await fake_sms.start_kavenegar()
    yield fcm, kavenegar
    for server in (fcm.server, kavenegar.server):
        assert server is not None
        await server.stop()


def registry_for(
    settings: Any, sessions: Any, fcm: fake_fcm.FakeFcm, kv: fake_sms.FakeKavenegar, **extra: Any
) -> ProviderRegistry:
    local = settings.model_copy(
        update={
            "dispatcher_fcm_url": fcm.base_url,
            "dispatcher_fcm_token_uri": fcm.token_uri,
            "dispatcher_kavenegar_url": kv.base_url,
            "dispatcher_credentials_ttl_s": 60.0,
            **extra,
        }
    )
    return ProviderRegistry(sessions=sessions, keyring=Keyring.from_settings(local), settings=local)


def apns_secret() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_credentials_are_write_only_sealed_and_route_sends(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    settings,
    sessions,
    fakes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fcm, kavenegar = fakes
    caplog.set_level(logging.DEBUG)
    account = fcm.service_account("shop-1")
    service_json = json.dumps(account)
    apns_key = apns_secret()
    app_id = app_keys["app_id"]
    secrets = [
        account["private_key"].split("\n")[1],
        account["private_key_id"],
        kavenegar.api_key,
        apns_key.split("\n")[1],
    ]

    created = await http.put(
        f"{URL}/fcm",
        headers=admin(app_keys),
        json={"secret": service_json, "config": {"android_channel_id": "promos"}},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["metadata"]["project_id"] == "shop-1"
    assert body["metadata"]["client_email"] == account["client_email"]
    assert body["metadata"]["private_key_id_last4"] == account["private_key_id"][-4:]
    assert body["channel"] == "push" and body["version"] == 1
    put_kv = await http.put(
        f"{URL}/kavenegar",
        headers=admin(app_keys),
        json={"secret": kavenegar.api_key, "config": {"sender": "10004346"}},
    )
    assert (
        put_kv.status_code == 201
        and put_kv.json()["metadata"]["secret_last4"] == kavenegar.api_key[-4:]
    )
    put_apns = await http.put(
        f"{URL}/apns", headers=admin(app_keys),
        json={"secret": apns_key, "config": {"key_id": "ABC123DEFG", "team_id": "TEAM123456", "topic": "ir.shop.app"}},
    )  # fmt: skip
    assert put_apns.status_code == 201

    listed = await http.get(URL, headers=admin(app_keys))
    assert [i["provider"] for i in listed.json()["items"]] == ["apns", "fcm", "kavenegar"]
    for answer in (
        created,
        put_kv,
        put_apns,
        listed,
        await http.get(f"{URL}/fcm", headers=admin(app_keys)),
    ):
        assert not any(s in answer.text for s in secrets)

    # At rest: only the envelope.
    async with sessions() as session:
        rows = (await session.execute(text(
            "SELECT provider, sealed, config::text, metadata::text FROM dispatcher_provider_credentials WHERE app_id = :a"
        ), {"a": app_id})).all()  # fmt: skip
    assert len(rows) == 3
    for row in rows:
        assert row.sealed.startswith("v1.")
        assert not any(s in row.sealed + row.config + row.metadata for s in secrets)

    # Sends go to the app's providers, on the wire.
    registry = registry_for(settings, sessions, fcm, kavenegar)
    try:
        push = await registry.for_address(app_id, Address(kind="fcm", value="device-token-1"))
        assert isinstance(push, FcmProvider)
        outcome = await push.send(
            Message(app_id=app_id, job_id="j1", channel="push", title="t", body="b"),
            Address(kind="fcm", value="device-token-1"),
        )
        assert (
            outcome.status == "sent"
            and fcm.messages[-1][1]["android"]["notification"]["channel_id"] == "promos"
        )
        text_provider = await registry.for_channel(app_id, "sms")
        assert isinstance(text_provider, KavenegarProvider)
        sms_outcome = await text_provider.send(
            Message(app_id=app_id, job_id="s1", channel="sms", title=None, body="کد ۱۲۳۴"),
            Address(kind="sms", value="09121234567"),
        )
        assert sms_outcome.status == "sent" and kavenegar.sent[-1].receptor == "09121234567"
        assert (await registry.for_address(app_id, Address(kind="apns", value="ab"))).name == "apns"
        assert (await registry.for_channel(app_id, "email")).name == "log"  # no SMTP: the fallback

        # Rotate, reconfigure, delete: the registry follows.
        rotated = await http.post(
            f"{URL}/kavenegar/rotate",
            headers=admin(app_keys),
            json={"secret": "ROTATED-KEY-123456"},
        )
        assert rotated.status_code == 200 and rotated.json()["metadata"]["secret_last4"] == "3456"
        assert rotated.json()["version"] == 2
        patched = await http.patch(f"{URL}/fcm", headers=admin(app_keys), json={"enabled": False})
        assert patched.status_code == 200 and patched.json()["enabled"] is False
        assert (await registry.for_address(app_id, Address(kind="fcm", value="x"))).name == "log"
        deleted = await http.delete(f"{URL}/apns", headers=admin(app_keys))
        assert deleted.status_code == 204
        assert (await http.get(f"{URL}/apns", headers=admin(app_keys))).status_code == 404
        assert (await registry.for_address(app_id, Address(kind="apns", value="ab"))).name == "log"
    finally:
        await registry.aclose()

    strict = registry_for(settings, sessions, fcm, kavenegar, dispatcher_log_fallback=False)
    try:
        assert await strict.for_address(app_id, Address(kind="apns", value="ab")) is None
        assert (await strict.for_channel(app_id, "log")).name == "log"
    finally:
        await strict.aclose()

    logged = caplog.text
    assert "HTTP Request" in logged  # httpx did log the Kavenegar calls — redacted
    assert not any(s in logged for s in [*secrets, "ROTATED-KEY-123456"]), (
        "a secret reached the logs"
    )


async def test_bad_credentials_answer_422_naming_the_field(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    cases = [
        ("fcm", {"secret": "{not json"}, "secret"),
        ("fcm", {"secret": json.dumps({"type": "service_account", "project_id": "p"})}, "secret"),
        (
            "apns",
            {
                "secret": apns_secret(),
                "config": {"key_id": "short", "team_id": "TEAM123456", "topic": "t"},
            },
            "config.key_id",
        ),
        (
            "apns",
            {
                "secret": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "config": {"key_id": "ABC123DEFG", "team_id": "TEAM123456", "topic": "t"},
            },
            "secret",
        ),
        ("webpush", {"secret": "not-a-key", "config": {"subject": "mailto:ops@shop.ir"}}, "secret"),
        ("webpush", {"secret": "x", "config": {"subject": "ops@shop.ir"}}, "config.subject"),
        (
            "smtp",
            {"secret": "pw", "config": {"host": "smtp.shop.ir", "from_address": "not-an-address"}},
            "config.from_address",
        ),
        ("kavenegar", {"secret": "k", "config": {"sender": "10004346"}, "extra": 1}, "extra"),
    ]
    for provider, body, field in cases:
        answer = await http.put(f"{URL}/{provider}", headers=admin(app_keys), json=body)
        assert answer.status_code == 422, (provider, answer.text)
        assert answer.json()["error"]["field"].endswith(field), (provider, answer.json())
        assert body["secret"] not in answer.text or len(body["secret"]) < 4
    unknown = await http.put(f"{URL}/carrier-pigeon", headers=admin(app_keys), json={"secret": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "provider"


async def test_another_apps_credentials_are_invisible(
    http: httpx.AsyncClient, app_keys: dict[str, str], settings
) -> None:
    put = await http.put(
        f"{URL}/kavenegar",
        headers=admin(app_keys),
        json={"secret": "MINE-KEY-1234567", "config": {}},
    )
    assert put.status_code == 201
    other = await provision_app(settings.database_url, name="other-app")
    theirs = {"Authorization": f"Bearer {other.admin_token}"}
    assert (await http.get(URL, headers=theirs)).json() == {"items": []}
    assert (await http.get(f"{URL}/kavenegar", headers=theirs)).status_code == 404
    assert (await http.delete(f"{URL}/kavenegar", headers=theirs)).status_code == 404
    assert (await http.get(f"{URL}/kavenegar", headers=admin(app_keys))).status_code == 200


async def test_other_replicas_changes_are_seen_after_the_ttl(
    app_keys: dict[str, str], settings, sessions, fakes
) -> None:
    """A change written elsewhere (no in-process invalidation) reaches the registry
    once the TTL has passed, and only the changed provider is rebuilt."""
    from services.dispatcher import credentials, credentials_store

    fcm, kavenegar = fakes
    app_id = app_keys["app_id"]
    local = settings.model_copy(
        update={
            "dispatcher_kavenegar_url": kavenegar.base_url,
            "dispatcher_fcm_url": fcm.base_url,
            "dispatcher_fcm_token_uri": fcm.token_uri,
        }
    )
    keyring = Keyring.from_settings(local)

    async def write(provider: str, config: dict[str, Any], secret: str) -> None:
        checked = credentials.check(provider, credentials.parse_config(provider, config), secret)
        async with sessions() as session, session.begin():
            await credentials_store.put(
                session, app_id=app_id, checked=checked, sealer=keyring.sealer
            )

    await write("kavenegar", {"sender": "10004346"}, kavenegar.api_key)
    await write("fcm", {}, json.dumps(fcm.service_account("shop-2")))
    now = [1000.0]
    registry = ProviderRegistry(
        sessions=sessions,
        keyring=keyring,
        settings=local.model_copy(update={"dispatcher_credentials_ttl_s": 30.0}),
        clock=lambda: now[0],
    )
    try:
        first_sms = await registry.for_channel(app_id, "sms")
        first_push = await registry.for_channel(app_id, "push")
        assert isinstance(first_sms, KavenegarProvider) and isinstance(first_push, FcmProvider)
        await write("kavenegar", {"sender": "20004346"}, "ANOTHER-KEY-9876543")
        now[0] += 29
        assert await registry.for_channel(app_id, "sms") is first_sms  # within the TTL
        now[0] += 2
        second_sms = await registry.for_channel(app_id, "sms")
        assert second_sms is not first_sms and second_sms._sender == "20004346"
        assert await registry.for_channel(app_id, "push") is first_push  # unchanged: kept
        async with sessions() as session, session.begin():
            row = await credentials_store.get(session, app_id=app_id, provider="kavenegar")
            assert row is not None
            await credentials_store.delete(session, row=row)
        now[0] += 31
        assert (await registry.for_channel(app_id, "sms")).name == "log"
    finally:
        await registry.aclose()
