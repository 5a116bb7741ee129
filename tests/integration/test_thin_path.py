"""The thin end-to-end path over HTTP, through the real broker, Postgres and chDB:
tracker link → click → install → attribution → profile → segment → journey → send →
receipt in ClickHouse."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from libs.runtime import postgres
from libs.runtime.tenancy import provision_app
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration


def admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin_token']}"}


async def create_welcome_journey(http: httpx.AsyncClient, keys: dict[str, str]) -> tuple[str, str]:
    segment = await http.post(
        "/admin/v1/segments",
        headers=admin(keys),
        json={
            "name": "Installed in the last 24 hours",
            "rule": {"first_seen": {"op": "after", "ago": {"hours": 24}}},
        },
    )
    assert segment.status_code == 201, segment.text
    journey = await http.post(
        "/admin/v1/journeys",
        headers=admin(keys),
        json={
            "name": "Welcome",
            "trigger": {"segment_entered": segment.json()["id"]},
            "definition": {
                "steps": [
                    {
                        "id": "welcome",
                        "send": {
                            "channel": "push",
                            "content": {
                                "title": "خوش آمدید",
                                "body": "Welcome "
                                "{{ profile.attributes.name | default('friend') }}!",
                            },
                        },
                    }
                ]
            },
        },
    )
    assert journey.status_code == 201, journey.text
    return segment.json()["id"], journey.json()["id"]


async def test_click_to_delivery(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    segment_id, journey_id = await create_welcome_journey(http, app_keys)
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin(app_keys),
        json={
            "name": "Autumn influencer",
            "channel": "google_play",
            "store_url": "https://play.google.com/store/apps/details?id=com.example",
        },
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert created.json()["click_url"].endswith(f"/c/{token}")

    click = await http.get(f"/c/{token}", headers={"User-Agent": "Mozilla/5.0 (Linux; Android 14)"})
    assert click.status_code == 302
    location = urlsplit(click.headers["location"])
    assert location.netloc == "play.google.com"
    query = parse_qs(location.query)
    assert query["id"] == ["com.example"]
    referrer = query["referrer"][0]
    click_id = parse_qs(referrer)["click_id"][0]

    device = f"dev-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).isoformat()
    posted = await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "sent_at": now,
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$install",
                    "device_id": device,
                    "ts": now,
                    "platform": "android",
                    "props": {"referrer": referrer},
                }
            ],
        },
    )
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"accepted": 1, "rejected": [], "duplicates": 0}

    user_key = f"d:{device}"

    async def attributed() -> dict | None:
        response = await http.get(f"/admin/v1/users/{user_key}", headers=admin(app_keys))
        body = response.json() if response.status_code == 200 else None
        if body and (body.get("attribution") or {}).get("method") == "click_id":
            return body
        return None

    profile = await eventually(attributed)
    assert profile["attribution"]["tracker_token"] == token
    assert profile["attribution"]["click_id"] == click_id
    assert profile["attribution"]["channel"] == "google_play"
    assert profile["platform"] == "android"

    async def delivered() -> list | None:
        response = await http.get(
            "/admin/v1/deliveries", params={"user_key": user_key}, headers=admin(app_keys)
        )
        assert response.status_code == 200, response.text
        return [i for i in response.json()["items"] if i["status"] == "sent"] or None

    items = await eventually(delivered)
    assert len(items) == 1
    assert items[0]["channel"] == "push"
    assert items[0]["journey_id"] == journey_id
    assert items[0]["provider"] == "log"

    profile = (await http.get(f"/admin/v1/users/{user_key}", headers=admin(app_keys))).json()
    assert profile["segments"] == [segment_id]

    engine = postgres.create_engine(platform.settings.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT title, body FROM dispatcher_outbox "
                        "WHERE app_id = :a AND user_key = :u"
                    ),
                    {"a": app_keys["app_id"], "u": user_key},
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(r.title, r.body) for r in rows] == [("خوش آمدید", "Welcome friend!")]


async def test_other_apps_data_answers_404(
    http: httpx.AsyncClient, app_keys: dict[str, str], settings
) -> None:
    created = await http.post(
        "/admin/v1/trackers",
        headers=admin(app_keys),
        json={"name": "t", "channel": "landing_page", "store_url": "https://example.com/app"},
    )
    token = created.json()["token"]
    other = await _another_app(settings)
    response = await http.get(f"/admin/v1/trackers/{token}", headers=admin(other))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    own = await http.get(f"/admin/v1/trackers/{token}", headers=admin(app_keys))
    assert own.status_code == 200


async def _another_app(settings) -> dict[str, str]:
    return asdict(await provision_app(settings.database_url, name="other"))
