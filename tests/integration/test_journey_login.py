"""A login does not welcome a user twice: the device's anonymous profile entered the
welcome segment and went through the journey; at login it merges into the user, who
enters the segment with ``merged_from`` naming it, and the journey does not start
again. A user whose device was never in the segment is welcomed at login as before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.journey.metrics import RUNS_CARRIED
from tests.conftest import Platform, eventually
from tests.integration.test_thin_path import admin, create_welcome_journey

pytestmark = pytest.mark.integration


async def _send(http: httpx.AsyncClient, keys: dict[str, str], **event: Any) -> None:
    now = datetime.now(UTC).isoformat()
    body = {"events": [{"event_id": str(uuid.uuid4()), "ts": now, **event}]}
    answer = await http.post("/v1/events", headers={"X-Hodhod-Key": keys["sdk_key"]}, json=body)
    assert answer.json()["accepted"] == 1, answer.text


async def test_a_login_does_not_restart_what_the_device_went_through(
    http: httpx.AsyncClient, app_keys: dict[str, str], platform: Platform
) -> None:
    segment_id, journey_id = await create_welcome_journey(http, app_keys)
    sessions = platform.app.state.resources.sessions
    app_id = app_keys["app_id"]
    device, user = f"dev-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"

    async def runs() -> dict[str, int]:
        async with sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT user_key, count(*) AS n FROM journey_runs "
                    "WHERE app_id = :a AND journey_id = :j GROUP BY user_key"
                ),
                {"a": app_id, "j": journey_id},
            )
            return {r.user_key: r.n for r in rows}

    async def profile_segments(user_key: str) -> list[str] | None:
        answer = await http.get(f"/admin/v1/users/{user_key}", headers=admin(app_keys))
        return answer.json().get("segments") if answer.status_code == 200 else None

    carried_before = RUNS_CARRIED._value.get()
    # Anonymous first: the device is welcomed.
    await _send(http, app_keys, name="$open", device_id=device, platform="android")

    async def welcomed_device() -> bool:
        return (await runs()).get(f"d:{device}") == 1

    await eventually(welcomed_device)

    # The login merges the device into the user, who enters the segment with the
    # anonymous key as merged_from: no second welcome.
    await _send(http, app_keys, name="$identify", device_id=device, user_id=user)

    async def merged() -> bool:
        return await profile_segments(user) == [segment_id]

    await eventually(merged)

    async def skipped() -> bool:
        return RUNS_CARRIED._value.get() > carried_before

    await eventually(skipped)
    assert (await runs()).get(user) is None
    assert (await runs()).get(f"d:{device}") == 1

    # A user whose device was never in the segment anonymously is welcomed at login.
    other = f"u-{uuid.uuid4().hex[:8]}"
    await _send(
        http, app_keys, name="$identify", device_id=f"dev-{uuid.uuid4().hex[:8]}", user_id=other
    )

    async def welcomed_other() -> bool:
        return (await runs()).get(other) == 1

    await eventually(welcomed_other)
