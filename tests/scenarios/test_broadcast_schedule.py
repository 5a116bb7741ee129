"""A broadcast end to end: a segment's members get one message at 10:00 of their own day,
throttled; a cancelled broadcast sends nothing more. Over HTTP and topics, on the clocked
platform (the broadcasts side of the journeys issue; not a PRODUCT.md scenario)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import eventually
from tests.scenarios.conftest import Clocked, Jobs, Sdk, admin

pytestmark = pytest.mark.integration


async def test_broadcast_at_each_members_local_time(
    clocked: Clocked,
    clocked_http: httpx.AsyncClient,
    clocked_keys: dict[str, str],
    sdk: Sdk,
    jobs: Jobs,
) -> None:
    headers = admin(clocked_keys)
    segment = await clocked_http.post(
        "/admin/v1/segments",
        headers=headers,
        json={"name": "VIP", "rule": {"attribute": "vip", "op": "eq", "value": True}},
    )
    segment_id = segment.json()["id"]
    tehran_user, berlin_user = f"u-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    for user, zone in ((tehran_user, "Asia/Tehran"), (berlin_user, "Europe/Berlin")):
        await sdk.send(
            "$attributes",
            device_id=f"dev-{user}",
            user_id=user,
            timezone=zone,
            props={"set": {"vip": True, "email": f"{user}@example.com"}},
        )

    async def members() -> bool:
        r = await clocked_http.post(
            "/admin/v1/broadcasts/preview", headers=headers, params={"segment": segment_id}
        )
        return r.json()["count"] == 2

    await eventually(members)
    # The broadcast fires tomorrow at 00:00 UTC; each member gets it at their next 10:00.
    tomorrow = (clocked.clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    created = await clocked_http.post(
        "/admin/v1/broadcasts",
        headers=headers,
        json={
            "name": "Yalda",
            "segment": segment_id,
            "channel": "email",
            "content": {"subject": "شب یلدا", "body": "30% off tonight"},
            "at": tomorrow.isoformat(),
            "local_time": "10:00",
            "per_second": 50,
        },
    )
    assert created.status_code == 201, created.text
    broadcast_id = created.json()["id"]
    clocked.clock.set(tomorrow)

    async def fired() -> bool:
        r = await clocked_http.get(f"/admin/v1/journeys/{broadcast_id}/stats", headers=headers)
        return r.json()["runs"] == 2  # both members entered, waiting for their 10:00

    await eventually(fired, within=60)
    await jobs.quiet(tehran_user, expect=0)
    day = tomorrow.date()
    ten = datetime.min.time().replace(hour=10)
    clocked.clock.set(datetime.combine(day, ten, ZoneInfo("Asia/Tehran")).astimezone(UTC))
    (mail,) = await jobs.of(tehran_user, count=1, within=60)
    assert (mail.channel, mail.broadcast_id, mail.journey_id) == (
        "email",
        broadcast_id,
        broadcast_id,
    )
    await jobs.quiet(berlin_user, expect=0)
    cancelled = await clocked_http.post(
        f"/admin/v1/broadcasts/{broadcast_id}/cancel", headers=headers
    )
    assert cancelled.json()["status"] == "cancelled"
    await jobs.quiet(berlin_user, expect=0, settle=1.0)
    clocked.clock.set(datetime.combine(day, ten, ZoneInfo("Europe/Berlin")).astimezone(UTC))
    await jobs.quiet(berlin_user, expect=0)  # cancelled before their 10:00
