"""Bad input: every HTTP mistake is a 4xx naming the problem; garbage on a topic goes
to the DLQ and the next good record is still processed."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from libs.runtime.kafka import Producer
from libs.schemas import DlqRecord, Event, decode, encode
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration


def sdk(keys: dict[str, str]) -> dict[str, str]:
    return {"X-Hodhod-Key": keys["sdk_key"]}


def event(name: str = "$open", **overrides: object) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "name": name,
        "device_id": "dev-bad",
        "ts": now,
        **overrides,
    }


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    return body["error"]


async def test_malformed_json_is_400(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    response = await http.post(
        "/v1/events",
        headers={**sdk(app_keys), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


async def test_oversize_body_is_413(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    body = b'{"events": ["' + b"x" * (platform.settings.max_body_bytes + 10) + b'"]}'
    response = await http.post("/v1/events", headers=sdk(app_keys), content=body)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_missing_and_unknown_keys_are_401(http: httpx.AsyncClient) -> None:
    missing = await http.post("/v1/events", json={"events": []})
    assert missing.status_code == 401
    assert error_of(missing)["field"] == "X-Hodhod-Key"
    unknown = await http.post(
        "/v1/events", json={"events": []}, headers={"X-Hodhod-Key": "hk_sdk_" + "x" * 32}
    )
    assert unknown.status_code == 401
    no_bearer = await http.get("/admin/v1/trackers", headers={"Authorization": "Basic abc"})
    assert no_bearer.status_code == 401
    assert error_of(no_bearer)["field"] == "Authorization"


async def test_wrong_kind_of_key_is_403(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    admin_on_sdk = await http.post(
        "/v1/events", json={"events": []}, headers={"X-Hodhod-Key": app_keys["admin_token"]}
    )
    assert admin_on_sdk.status_code == 403
    assert error_of(admin_on_sdk)["code"] == "wrong_key_kind"
    sdk_on_admin = await http.get(
        "/admin/v1/trackers", headers={"Authorization": f"Bearer {app_keys['sdk_key']}"}
    )
    assert sdk_on_admin.status_code == 403
    server_on_admin = await http.get(
        "/admin/v1/trackers", headers={"Authorization": f"Bearer {app_keys['server_key']}"}
    )
    assert server_on_admin.status_code == 403


async def test_partial_acceptance_keeps_valid_events(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    response = await http.post(
        "/v1/events",
        headers=sdk(app_keys),
        json={
            "events": [
                event(),
                event(ts="yesterday"),
                event(name=""),
                event(ts=old),
                event(colour="red"),
                event("$purchase", revenue=12.5, currency="IRR"),
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "ts"),
        (2, "name"),
        (3, "ts"),
        (4, "colour"),
    ]


async def test_gzip_body_is_accepted(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    payload = gzip.compress(orjson.dumps({"events": [event()]}))
    response = await http.post(
        "/v1/events",
        content=payload,
        headers={**sdk(app_keys), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    broken = await http.post(
        "/v1/events",
        content=b"\x1f\x8bnot gzip",
        headers={**sdk(app_keys), "Content-Encoding": "gzip"},
    )
    assert broken.status_code == 400
    assert error_of(broken)["code"] == "malformed_gzip"


async def test_envelope_errors_name_the_field(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    not_list = await http.post("/v1/events", headers=sdk(app_keys), json={"events": {}})
    assert not_list.status_code == 422
    assert error_of(not_list)["field"] == "events"
    too_many = await http.post(
        "/v1/events", headers=sdk(app_keys), json={"events": [event() for _ in range(501)]}
    )
    assert too_many.status_code == 422
    assert error_of(too_many)["field"] == "events"
    bad_sent_at = await http.post(
        "/v1/events", headers=sdk(app_keys), json={"sent_at": "soon", "events": [event()]}
    )
    assert bad_sent_at.status_code == 422
    assert error_of(bad_sent_at)["field"] == "sent_at"


async def test_admin_validation_names_the_field(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    tracker = await http.post(
        "/admin/v1/trackers",
        headers=headers,
        json={"name": "x", "channel": "carrier_pigeon", "store_url": "https://example.com"},
    )
    assert tracker.status_code == 422
    assert error_of(tracker)["field"] == "channel"
    url = await http.post(
        "/admin/v1/trackers",
        headers=headers,
        json={"name": "x", "channel": "web", "store_url": "javascript:alert(1)"},
    )
    assert url.status_code == 422
    assert error_of(url)["field"] == "store_url"
    rule = await http.post(
        "/admin/v1/segments",
        headers=headers,
        json={
            "name": "bad",
            "rule": {
                "all": [
                    {"attribute": "city", "op": "eq", "value": "Tehran"},
                    {"attribute": "age", "op": "older_than", "value": 3},
                ]
            },
        },
    )
    assert rule.status_code == 422
    assert error_of(rule)["field"] == "rule.all.1.op"
    missing_segment = await http.post(
        "/admin/v1/journeys",
        headers=headers,
        json={
            "name": "j",
            "trigger": {"segment_entered": "seg_nope"},
            "definition": {
                "steps": [{"id": "a", "send": {"channel": "push", "content": {"body": "hi"}}}]
            },
        },
    )
    assert missing_segment.status_code == 422
    assert error_of(missing_segment)["field"] == "trigger.segment_entered"


async def test_unknown_tracker_is_404_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/c/doesnotexist")
    assert response.status_code == 404
    assert "not active" in response.text


async def test_garbage_on_a_topic_goes_to_dlq(platform: Platform, app_keys: dict[str, str]) -> None:
    """A foreign producer writes garbage and an invalid payload to ``events``; both
    land in ``events.dlq`` with the original bytes, and the next good event still
    updates its profile."""
    producer = Producer(platform.settings.kafka_bootstrap)
    await producer.start()
    marker = uuid.uuid4().hex
    garbage = b"\x00\xffnot json " + marker.encode()
    invalid = orjson.dumps({"app_id": app_keys["app_id"], "event_id": marker, "name": "x"})
    good = Event(
        app_id=app_keys["app_id"],
        event_id=str(uuid.uuid4()),
        name="$open",
        device_id="dev-after-garbage",
        ts=datetime.now(UTC),
        received_at=datetime.now(UTC),
        source="backend",
    )
    try:
        key = f"{app_keys['app_id']}:dev-after-garbage".encode()
        await producer.send_raw("events", garbage, key)
        await producer.send_raw("events", invalid, key)
        await producer.send_raw("events", encode(good), key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        "events.dlq",
        bootstrap_servers=platform.settings.kafka_bootstrap,
        group_id=f"test.dlq.{marker}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    found: dict[str, DlqRecord] = {}
    try:

        async def dead_letters() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    dlq = decode(DlqRecord, rec.value)
                    if marker.encode() in dlq.value_bytes():
                        found[f"{dlq.consumer_group}|{dlq.value_bytes()[:2]!r}"] = dlq
            # both poison records, as seen by the five consumer groups of `events`
            return len(found) >= 10

        await eventually(dead_letters, within=60)
    finally:
        await consumer.stop()
    groups = {d.consumer_group for d in found.values()}
    assert groups == {
        "ingest.warehouse",
        "segmenter.profiles",
        "attribution.matcher",
        "attribution.postbacks",
        "journey.events",
    }
    raw_copies = [d for d in found.values() if d.value_bytes() == garbage]
    assert raw_copies and all("invalid JSON" in d.error for d in raw_copies)
    assert all(d.source_topic == "events" for d in found.values())

    async with httpx.AsyncClient(base_url=platform.base_url) as http:

        async def profile() -> bool:
            response = await http.get(
                "/admin/v1/users/d:dev-after-garbage",
                headers={"Authorization": f"Bearer {app_keys['admin_token']}"},
            )
            return response.status_code == 200

        await eventually(profile)


async def test_nul_in_paths_and_bodies_is_a_4xx(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    assert (await http.get("/c/%00")).status_code == 400
    assert (await http.get("/admin/v1/users/%00", headers=headers)).status_code == 400
    tracker = await http.post(
        "/admin/v1/trackers",
        headers=headers,
        json={
            "name": "x",
            "channel": "web",
            "store_url": "https://example.com",
            "network": "a\u0000",
        },
    )
    assert tracker.status_code == 422
    assert error_of(tracker)["field"] == "network"
    segment = await http.post(
        "/admin/v1/segments",
        headers=headers,
        json={"name": "s", "rule": {"attribute": "city", "op": "eq", "value": "Te\u0000hran"}},
    )
    assert segment.status_code == 422
    assert error_of(segment)["field"] == "rule.value"


async def test_click_with_control_characters_is_recorded_clean(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    """A NUL in a query parameter must neither fail the redirect nor poison the click
    consumer (Postgres refuses NUL): it is stripped before the click is recorded."""
    headers = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    created = await http.post(
        "/admin/v1/trackers",
        headers=headers,
        json={"name": "t", "channel": "landing_page", "store_url": "https://example.com/app"},
    )
    token = created.json()["token"]
    # A phone's user agent: clicks from bots (httpx's default agent) never attribute.
    response = await http.get(
        f"/c/{token}?adid=ab%00cd", headers={"User-Agent": "Mozilla/5.0 (Linux; Android 14)"}
    )
    assert response.status_code == 302
    click_id = parse_qs(parse_qs(urlsplit(response.headers["location"]).query)["referrer"][0])[
        "click_id"
    ][0]
    device = f"dev-{uuid.uuid4().hex[:6]}"
    posted = await http.post(
        "/v1/events",
        headers=sdk(app_keys),
        json={
            "events": [
                event("$install", device_id=device, props={"referrer": f"click_id={click_id}"})
            ]
        },
    )
    assert posted.json()["accepted"] == 1

    async def attributed() -> bool:
        r = await http.get(f"/admin/v1/users/d:{device}", headers=headers)
        return r.status_code == 200 and (r.json()["attribution"] or {}).get("method") == (
            "click_id"
        )

    await eventually(attributed)
    assert not platform.crashes


async def test_identity_edges(http: httpx.AsyncClient, app_keys: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    long_device = "x" * 128
    response = await http.post(
        "/v1/events",
        headers=sdk(app_keys),
        json={
            "events": [
                event("$install", device_id=long_device),
                event(user_id="d:someone-else"),
                event(timezone="Z" * 100),
            ]
        },
    )
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "user_id"), (2, "timezone")]

    async def profile() -> bool:
        r = await http.get(f"/admin/v1/users/d:{long_device}", headers=headers)
        return r.status_code == 200

    await eventually(profile)


async def test_an_expired_send_job_is_suppressed(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    from libs.schemas import MessageContent, SendJob

    producer = Producer(platform.settings.kafka_bootstrap)
    await producer.start()
    now = datetime.now(UTC)
    job = SendJob(
        app_id=app_keys["app_id"],
        job_id=uuid.uuid4().hex,
        user_key="u-late",
        channel="sms",
        content=MessageContent(body="Your code is 1234"),
        transactional=True,
        created_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1),
    )
    try:
        await producer.publish(job)
    finally:
        await producer.stop()

    async def receipt() -> list | None:
        r = await http.get(
            "/admin/v1/deliveries",
            params={"user_key": "u-late"},
            headers={"Authorization": f"Bearer {app_keys['admin_token']}"},
        )
        return r.json()["items"] or None

    items = await eventually(receipt)
    assert [(i["job_id"], i["status"]) for i in items] == [(job.job_id, "suppressed")]
    assert "expired" in items[0]["error"]


async def test_segment_references_must_exist_in_the_app(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    missing = await http.post(
        "/admin/v1/segments",
        headers=headers,
        json={"name": "s", "rule": {"all": [{"segment": "seg_nope"}]}},
    )
    assert missing.status_code == 422
    assert error_of(missing)["field"] == "rule.all.0.segment"
    base = await http.post(
        "/admin/v1/segments",
        headers=headers,
        json={"name": "base", "rule": {"attribute": "city", "op": "eq", "value": "Tehran"}},
    )
    ok = await http.post(
        "/admin/v1/segments",
        headers=headers,
        json={"name": "derived", "rule": {"not": {"segment": base.json()["id"]}}},
    )
    assert ok.status_code == 201, ok.text
