"""PRODUCT.md scenario 5 — new-user activation: installed, no activity for 2–3 days → an
onboarding message on the best reachable channel. Over HTTP and topics, on the clocked
platform."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from tests.conftest import eventually
from tests.scenarios.conftest import Clocked, Jobs, Sdk, admin

pytestmark = pytest.mark.integration

ACTIVATION = {
    "trigger": {"type": "event", "event": "$install"},
    "definition": {
        "start": "settle",
        "nodes": [
            {"id": "settle", "type": "wait", "duration": {"days": 3}, "next": "idle"},
            {
                "id": "idle",
                "type": "condition",
                # No activity for the last 2 days (of the 3 since installing).
                "rule": {"last_seen": {"op": "before", "ago": {"days": 2}}},
                "yes": "onboard",
                "no": "active",
            },
            {
                "id": "onboard",
                "type": "send",
                "channel": "best",
                "fallback": ["push", "sms", "email"],
                "content": {"title": "خوش آمدید", "body": "Three steps to your first order"},
            },
            {"id": "active", "type": "exit"},
        ],
    },
}


async def test_new_user_activation(
    clocked: Clocked,
    clocked_http: httpx.AsyncClient,
    clocked_keys: dict[str, str],
    sdk: Sdk,
    jobs: Jobs,
) -> None:
    created = await clocked_http.post(
        "/admin/v1/journeys", headers=admin(clocked_keys), json={"name": "Activation", **ACTIVATION}
    )
    assert created.status_code == 201, created.text
    journey_id = created.json()["id"]
    sms_only, pushable, active = (f"u-{uuid.uuid4().hex[:6]}" for _ in range(3))
    for user in (sms_only, pushable, active):
        await sdk.send("$install", device_id=f"dev-{user}", user_id=user, platform="android")
    await sdk.send(
        "$attributes",
        device_id=f"dev-{sms_only}",
        user_id=sms_only,
        props={"set": {"phone": "+989121112233"}},
    )
    await sdk.send(
        "$push_token",
        device_id=f"dev-{pushable}",
        user_id=pushable,
        props={"token": f"fcm-{pushable}", "provider": "fcm"},
    )
    await sdk.send(
        "$push_permission", device_id=f"dev-{pushable}", user_id=pushable, props={"granted": True}
    )

    async def entered() -> bool:
        r = await clocked_http.get(
            f"/admin/v1/journeys/{journey_id}/stats", headers=admin(clocked_keys)
        )
        return r.json()["runs"] == 3

    await eventually(entered)
    clocked.clock.advance(timedelta(days=1, hours=12))
    await sdk.send("$open", device_id=f"dev-{active}", user_id=active)

    async def seen() -> bool:
        r = await clocked_http.get(f"/admin/v1/users/{active}", headers=admin(clocked_keys))
        return r.json()["sessions"] == 1

    await eventually(seen)
    clocked.clock.advance(timedelta(days=1, hours=11))
    await jobs.quiet(sms_only, expect=0)
    clocked.clock.advance(timedelta(hours=1))  # three days after installing
    (by_sms,) = await jobs.of(sms_only, count=1)
    (by_push,) = await jobs.of(pushable, count=1)
    assert (by_sms.channel, by_sms.fallback_channels) == ("sms", [])
    assert (by_push.channel, by_push.fallback_channels) == ("push", [])
    assert by_push.content is not None and by_push.content.body == "Three steps to your first order"
    await jobs.quiet(active, expect=0)  # opened the app on day 2: not idle
    r = await clocked_http.get(
        f"/admin/v1/journeys/{journey_id}/stats", headers=admin(clocked_keys)
    )
    nodes = {n["node_id"]: n for n in r.json()["nodes"]}
    assert (nodes["idle"]["entered"], nodes["onboard"]["entered"], nodes["active"]["exited"]) == (
        3,
        2,
        1,
    )
