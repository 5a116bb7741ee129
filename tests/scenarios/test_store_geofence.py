"""PRODUCT.md scenario 7 — store geofence: entering a branch's geofence sends a discount
code to the inbox and a push; leaving it sends a reminder. Over HTTP and topics."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from tests.scenarios.conftest import Clocked, Jobs, Sdk, admin

pytestmark = pytest.mark.integration

BRANCH = {"lat": 35.7575, "lon": 51.4098, "radius_m": 150, "fence_id": "vanak-branch"}


async def test_store_geofence(
    clocked: Clocked,
    clocked_http: httpx.AsyncClient,
    clocked_keys: dict[str, str],
    sdk: Sdk,
    jobs: Jobs,
) -> None:
    headers = admin(clocked_keys)
    enter = await clocked_http.post(
        "/admin/v1/journeys",
        headers=headers,
        json={
            "name": "Welcome to the branch",
            "trigger": {"type": "geofence", "on": "enter", **BRANCH},
            "definition": {
                "start": "code",
                "nodes": [
                    {
                        "id": "code",
                        "type": "send",
                        "channel": "inbox",
                        "content": {
                            "title": "کد تخفیف",
                            "body": "VANAK20 — 20% off today",
                            "data": {"code": "VANAK20"},
                        },
                        "expires_after": {"days": 1},
                        "next": "push",
                    },
                    {
                        "id": "push",
                        "type": "send",
                        "channel": "push",
                        "content": {"body": "Your code is in your inbox"},
                    },
                ],
                "entry": {"reentry": "after_cooldown", "cooldown": {"hours": 12}},
            },
        },
    )
    leave = await clocked_http.post(
        "/admin/v1/journeys",
        headers=headers,
        json={
            "name": "Come back",
            "trigger": {"type": "geofence", "on": "exit", **BRANCH},
            "definition": {
                "start": "reminder",
                "nodes": [
                    {
                        "id": "reminder",
                        "type": "send",
                        "channel": "push",
                        "content": {"body": "VANAK20 is valid until tonight"},
                    }
                ],
                "entry": {"reentry": "after_cooldown", "cooldown": {"hours": 12}},
            },
        },
    )
    assert enter.status_code == 201 and leave.status_code == 201, (enter.text, leave.text)
    user = f"u-{uuid.uuid4().hex[:6]}"
    device = f"dev-{user}"
    # Far away first: neither entering nor leaving.
    await sdk.send("$location", device_id=device, user_id=user, props={"lat": 35.70, "lon": 51.40})
    await jobs.quiet(user, expect=0)
    clocked.clock.advance(timedelta(minutes=10))
    await sdk.send(
        "$location", device_id=device, user_id=user, props={"lat": 35.7578, "lon": 51.4099}
    )
    inbox, push = await jobs.of(user, count=2)
    assert (inbox.channel, inbox.step_id, push.channel) == ("inbox", "code", "push")
    assert inbox.content is not None and inbox.content.data["code"] == "VANAK20"
    assert inbox.journey_id == enter.json()["id"]
    # Moving inside the fence is no new entry.
    clocked.clock.advance(timedelta(minutes=5))
    await sdk.send(
        "$location", device_id=device, user_id=user, props={"lat": 35.7576, "lon": 51.4097}
    )
    await jobs.quiet(user, expect=2)
    clocked.clock.advance(timedelta(minutes=30))
    await sdk.send(
        "$location", device_id=device, user_id=user, props={"lat": 35.7700, "lon": 51.4300}
    )
    *_, reminder = await jobs.of(user, count=3)
    assert (reminder.journey_id, reminder.step_id) == (leave.json()["id"], "reminder")
