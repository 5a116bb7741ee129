"""The event API over HTTP and the real broker: server-to-server events and
verifications, the per-key rate limit, reserved events, and key kinds."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from libs.runtime.ratelimit import TokenBuckets
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def sdk(keys: dict[str, str]) -> dict[str, str]:
    return {"X-Hodhod-Key": keys["sdk_key"]}


def server(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['server_key']}"}


def event(name: str = "$open", **overrides: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "name": name,
        "device_id": "dev-ingest",
        "ts": datetime.now(UTC).isoformat(),
        **overrides,
    }


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    error: dict[str, Any] = body["error"]
    return error


async def records_of(
    platform: Platform,
    topic: str,
    app_id: str,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    within: float = 30.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the start with a fresh group until ``done`` holds for the
    records of ``app_id`` seen so far; returns them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=platform.settings.kafka_bootstrap,
        group_id=f"test.ingest.{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:

        async def probe() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        value = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue  # other tests put garbage on topics on purpose
                    if isinstance(value, dict) and value.get("app_id") == app_id:
                        found.append(value)
            return done(found)

        await eventually(probe, within=within)
    finally:
        await consumer.stop()
    return found


# --- server-to-server events ---------------------------------------------------------------


async def test_s2s_accepts_history_the_sdk_refuses(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    backfill = event("$purchase", ts=old, device_id=None, user_id="u-s2s", revenue=9.5)
    backfill = {k: v for k, v in backfill.items() if v is not None}
    backfill["currency"] = "USD"

    via_sdk = await http.post("/v1/events", headers=sdk(app_keys), json={"events": [backfill]})
    assert via_sdk.status_code == 200
    assert via_sdk.json()["accepted"] == 0
    assert [(r["index"], r["field"]) for r in via_sdk.json()["rejected"]] == [(0, "ts")]
    assert "/v1/s2s/events" in via_sdk.json()["rejected"][0]["reason"]

    via_s2s = await http.post(
        "/v1/s2s/events", headers=server(app_keys), json={"events": [backfill]}
    )
    assert via_s2s.status_code == 200, via_s2s.text
    assert via_s2s.json() == {"accepted": 1, "rejected": [], "duplicates": 0}

    (record,) = await records_of(
        platform, "events", app_keys["app_id"], lambda found: len(found) >= 1
    )
    assert record["event_id"] == backfill["event_id"]
    assert record["source"] == "s2s"
    assert record["ip"] is None  # the backend's address says nothing about the user
    assert datetime.fromisoformat(record["ts"]) == datetime.fromisoformat(old)


async def test_s2s_applies_the_same_validation(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/s2s/events",
        headers=server(app_keys),
        json={
            "events": [
                event("$purchase", revenue=-5, currency="IRR"),
                event("signup", user_id="undefined"),
                event("$login"),
                event("signup", user_id="u-1"),
                event("$purchase", revenue=-5, currency="IRR", props={"refund": True}),
                event(ts=(datetime.now(UTC) + timedelta(days=2)).isoformat()),
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (0, "revenue"),
        (1, "user_id"),
        (2, "name"),
        (5, "ts"),
    ]


async def test_s2s_envelope_errors_are_422(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    too_many = [event() for _ in range(platform.settings.ingest_max_batch + 1)]
    response = await http.post(
        "/v1/s2s/events", headers=server(app_keys), json={"events": too_many}
    )
    assert response.status_code == 422
    assert error_of(response)["field"] == "events"


# --- reserved events over the SDK API ------------------------------------------------------


async def test_sdk_rejects_broken_reserved_events_by_index(
    http: httpx.AsyncClient, app_keys: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/events",
        headers=sdk(app_keys),
        json={
            "events": [
                event("$identify", user_id="u-42"),
                event("$identify", user_id="[object Object]"),
                event("$attributes", props={"set": {"phone": 989121234567}}),
                event("$push_token", props={"token": "abc", "provider": "fcm"}),
                event("$location", props={"lat": 100, "lon": 0}),
                event("$opt_out", props={"channel": "sms"}),
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "user_id"),
        (2, "props.set.phone"),
        (4, "props.lat"),
    ]


# --- verifications -------------------------------------------------------------------------


async def test_verify_publishes_user_verified_idempotently(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    ts = "2024-05-01T08:40:00Z"
    body = {"user_id": "u-verified", "device_id": "dev-v", "ts": ts, "method": "otp"}
    first = await http.post("/v1/s2s/verify", headers=server(app_keys), json=body)
    assert first.status_code == 202, first.text
    verification_id = first.json()["verification_id"]
    assert set(first.json()) == {"verification_id"}
    retried = await http.post("/v1/s2s/verify", headers=server(app_keys), json=body)
    assert retried.status_code == 202
    assert retried.json()["verification_id"] == verification_id

    without_ts = await http.post(
        "/v1/s2s/verify", headers=server(app_keys), json={"user_id": "u-now"}
    )
    assert without_ts.status_code == 202

    found = await records_of(
        platform, "verifications", app_keys["app_id"], lambda found: len(found) >= 3
    )
    mine = [v for v in found if v["user_id"] == "u-verified"]
    assert [v["verification_id"] for v in mine] == [verification_id, verification_id]
    assert mine[0]["device_id"] == "dev-v" and mine[0]["method"] == "otp"
    assert datetime.fromisoformat(mine[0]["ts"]) == datetime(2024, 5, 1, 8, 40, tzinfo=UTC)
    (now,) = [v for v in found if v["user_id"] == "u-now"]
    assert abs(datetime.fromisoformat(now["ts"]) - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "null"}, "user_id"),
        ({"user_id": "Anonymous"}, "user_id"),
        ({"user_id": "  "}, "user_id"),
        ({}, "user_id"),
        ({"user_id": "u", "ts": "yesterday"}, "ts"),
        ({"user_id": "u", "extra": 1}, "extra"),
    ],
)
async def test_verify_rejects_bad_bodies_naming_the_field(
    http: httpx.AsyncClient, app_keys: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await http.post("/v1/s2s/verify", headers=server(app_keys), json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


# --- key kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/s2s/events", "/v1/s2s/verify"])
async def test_s2s_needs_a_server_key(
    http: httpx.AsyncClient, app_keys: dict[str, str], path: str
) -> None:
    body: dict[str, Any] = {"events": []} if path.endswith("events") else {"user_id": "u"}
    for headers in (
        {"Authorization": f"Bearer {app_keys['sdk_key']}"},
        {"Authorization": f"Bearer {app_keys['admin_token']}"},
    ):
        response = await http.post(path, headers=headers, json=body)
        assert response.status_code == 403
        assert error_of(response)["code"] == "wrong_key_kind"
    # The SDK header is not how a server authenticates.
    as_sdk = await http.post(path, headers=sdk(app_keys), json=body)
    assert as_sdk.status_code == 401
    assert error_of(as_sdk)["field"] == "Authorization"
    unknown = await http.post(
        path, headers={"Authorization": "Bearer hk_srv_" + "x" * 32}, json=body
    )
    assert unknown.status_code == 401


# --- rate limit ----------------------------------------------------------------------------


async def test_rate_limit_answers_429_and_publishes_nothing(
    http: httpx.AsyncClient,
    app_keys: dict[str, str],
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tiny bucket for this test: 10 events at once, then one every 2 seconds.
    monkeypatch.setattr(
        platform.app.state,
        "ingest_rate_limiter",
        TokenBuckets(rate_per_s=0.5, burst=10),
        raising=False,
    )
    accepted = [event() for _ in range(8)]
    ok = await http.post("/v1/events", headers=sdk(app_keys), json={"events": accepted})
    assert ok.status_code == 200 and ok.json()["accepted"] == 8

    refused = [event() for _ in range(5)]
    limited = await http.post("/v1/events", headers=sdk(app_keys), json={"events": refused})
    assert limited.status_code == 429
    assert error_of(limited)["code"] == "rate_limited"
    retry_after = limited.headers["Retry-After"]
    assert re.fullmatch(r"[0-9]+", retry_after)
    assert 5 <= int(retry_after) <= 7  # 3 events missing at 0.5/s

    # Another key of the same app has its own bucket.
    s2s = await http.post("/v1/s2s/events", headers=server(app_keys), json={"events": [event()]})
    assert s2s.status_code == 200 and s2s.json()["accepted"] == 1

    # The 2 tokens left still let a small request through: it is the marker that the
    # refused events, had they been published, would have been read before (same key,
    # same partition).
    marker = event()
    after = await http.post("/v1/events", headers=sdk(app_keys), json={"events": [marker]})
    assert after.status_code == 200 and after.json()["accepted"] == 1

    found = await records_of(
        platform,
        "events",
        app_keys["app_id"],
        lambda found: any(e["event_id"] == marker["event_id"] for e in found),
    )
    ids = {e["event_id"] for e in found}
    assert {e["event_id"] for e in accepted} <= ids
    assert ids.isdisjoint({e["event_id"] for e in refused})

    metrics = (await http.get("/metrics")).text
    assert 'hodhod_ingest_rate_limited_requests_total{source="sdk"}' in metrics


async def test_default_limit_lets_a_full_batch_through(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    assert platform.settings.ingest_rate_burst >= platform.settings.ingest_max_batch
    batch = [event("custom", props={"i": i}) for i in range(platform.settings.ingest_max_batch)]
    response = await http.post("/v1/events", headers=sdk(app_keys), json={"events": batch})
    assert response.status_code == 200
    assert response.json() == {"accepted": len(batch), "rejected": [], "duplicates": 0}


# --- docs/topics.md ------------------------------------------------------------------------


async def test_the_topics_doc_example_produces_a_valid_event(
    app_keys: dict[str, str], platform: Platform
) -> None:
    doc = (ROOT / "docs" / "topics.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    order_id = uuid.uuid4().hex
    # Not subprocess.run: the platform shares this event loop and must keep running.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP": platform.settings.kafka_bootstrap,
            "APP_ID": app_keys["app_id"],
            "ORDER_ID": order_id,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    (record,) = await records_of(
        platform, "events", app_keys["app_id"], lambda found: len(found) >= 1
    )
    from libs.schemas import Event, validate

    produced = validate(Event, record)
    assert produced.props == {"order_id": order_id}
    assert produced.name == "$purchase" and produced.source == "backend"
