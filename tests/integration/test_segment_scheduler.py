"""The scheduler moves users in and out of time-dependent segments with no new event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.segmenter.scheduler import SegmentScheduler
from tests.conftest import Platform, eventually

pytestmark = pytest.mark.integration


async def test_time_passing_moves_users_without_events(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    admin = {"Authorization": f"Bearer {app_keys['admin_token']}"}
    recent = await http.post(
        "/admin/v1/segments",
        headers=admin,
        json={
            "name": "seen in the last hour",
            "rule": {"last_seen": {"op": "after", "ago": {"hours": 1}}},
        },
    )
    lapsed = await http.post(
        "/admin/v1/segments",
        headers=admin,
        json={
            "name": "not seen for an hour",
            "rule": {"last_seen": {"op": "before", "ago": {"hours": 1}}},
        },
    )
    recent_id, lapsed_id = recent.json()["id"], lapsed.json()["id"]
    device = f"dev-{uuid.uuid4().hex[:6]}"
    seen = datetime.now(UTC) - timedelta(minutes=58)
    await http.post(
        "/v1/events",
        headers={"X-Hodhod-Key": app_keys["sdk_key"]},
        json={
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "name": "$open",
                    "device_id": device,
                    "ts": seen.isoformat(),
                }
            ]
        },
    )

    async def segments() -> list[str]:
        r = await http.get(f"/admin/v1/users/d:{device}", headers=admin)
        return r.json()["segments"] if r.status_code == 200 else []

    assert await eventually(segments) == [recent_id]

    resources = platform.app.state.resources
    scheduler = SegmentScheduler(resources.sessions, resources.producer)
    later = datetime.now(UTC) + timedelta(minutes=5)  # the hour has passed
    assert await scheduler.tick_app(app_keys["app_id"], later) == 2
    assert await segments() == [lapsed_id]
    # The same tick again changes nothing: memberships already agree with the clock.
    assert await scheduler.tick_app(app_keys["app_id"], later) == 0
